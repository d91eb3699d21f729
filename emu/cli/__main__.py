"""`python -m emu.cli`: the same as the `ptemu` command."""

import sys

from emu.cli.main import main

sys.exit(main())
