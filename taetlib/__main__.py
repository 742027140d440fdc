import sys

from . import cli, doctor, tuning

# tune and doctor stand a floor above cli (they run training and evaluation): they register from here
sys.exit(cli.main(commands=(tuning.add_cli, doctor.add_cli)))
