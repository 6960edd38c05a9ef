"""`python -m relay COMMAND`: see relay/cli.py."""

import sys

from relay.cli import main

sys.exit(main())
