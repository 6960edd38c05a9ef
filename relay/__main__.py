"""`python -m relay COMMAND`: see relay/cli/."""

import sys

from relay.cli import main

sys.exit(main())
