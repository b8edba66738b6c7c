"""``python -m featherdeploy SUBCOMMAND ...``: the ``featherdeploy`` command (cli.py)."""

from __future__ import annotations

import sys

from featherdeploy.cli import main

if __name__ == "__main__":
    sys.exit(main())
