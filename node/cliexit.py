"""What every `ats` command shares: its exit codes, the default node URL, and how it reports a failure.

node/cli.py (the parser and the built-in commands) and the command modules it loads
(node/clicmds.py, node/clibudget.py, node/clitoken.py) all import from here, so no command
module imports node/cli.py back.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_URL = "http://127.0.0.1:8470"


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"ats: {message}", file=sys.stderr)
    return code
