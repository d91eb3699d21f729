"""The `ptemu` command line: one module per group of commands.

`main` (emu.cli.main) builds the parser from each command module's
`add_parsers` and dispatches; emu.cli.common holds what they share
(consoles, exit statuses, input errors); run, demo, explore (explore and
replay), failures and fuzz are the commands; output checks output paths.
"""

from emu.cli.main import main

__all__ = ["main"]
