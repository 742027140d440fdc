import sys

from . import cli, tuning

sys.exit(cli.main(commands=(tuning.add_cli,)))   # tune stands a floor above cli: it registers from here
