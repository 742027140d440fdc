import sys

from . import cli, doctor, study, tuning

# tune, doctor and study stand a floor above cli (training, evaluation, the sweep's readers): they register here
sys.exit(cli.main(commands=(tuning.add_cli, doctor.add_cli, study.add_cli)))
