"""Who a command acts as, in the audit log."""

from __future__ import annotations

import getpass


def cli_actor() -> str:
    """Who did it, for the audit log: the local account running the command."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
