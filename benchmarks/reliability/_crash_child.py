"""The real `mailpki` command line, killed with SIGKILL at one named point.

    python -m benchmarks.reliability._crash_child '{"point": ..., "nth": 1, "argv": [...]}'

Runs `mailpki ARGV` (the same Typer app as the installed command) after wrapping one
function so that the process sends itself SIGKILL there: no `finally`, no atexit, no
rollback by Python. Points:

  step:NAME        the enrollment step NAME (enrollment.enroll.STEPS), in this process or
                   in a bulk worker (forked: the wrap is inherited)
  in-transaction   inside the certificate transaction, after the escrow row was flushed
  before-flush     bulk: the nth batch's lines written to stdout's buffer, not flushed
  after-flush      bulk: the nth batch's lines flushed, its delivery not yet recorded
  after-record     bulk: the nth batch's delivery recorded
  fetch-uncommitted  recovery fetch: the service's answer made, its transaction open
  fetch-answered   recovery fetch: the service committed and answered, nothing else done
  fetch-audited    recovery fetch: the instance's log has the recovery, no file yet
  fetch-written    recovery fetch: the PKCS#12 written, its password not yet printed
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after(owner: Any, name: str, nth: int, when: Any = None) -> None:
    """Wrap owner.name: die once its nth call (matching `when`) has returned."""
    original = getattr(owner, name)
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if when is None or when(*args, **kwargs):
            calls[0] += 1
            if calls[0] == nth:
                _die()
        return result

    setattr(owner, name, wrapped)


def arm(point: str, nth: int) -> None:
    from mailpki.base import files
    from mailpki.cli import enroll as cli_enroll
    from mailpki.enrollment import enroll
    from mailpki.instance import bulk, recovery_admin
    from mailpki.keymanager.manager import KeyManager
    from mailpki.recovery import client
    from mailpki.recovery.service import RecoveryService

    if point.startswith("step:"):
        target = point.removeprefix("step:")
        original_init = enroll.Enroller.__init__
        seen = [0]

        def hook(step: str) -> None:
            if step == target:
                seen[0] += 1
                if seen[0] == nth:
                    _die()

        def init(self: Any, **kwargs: Any) -> None:
            original_init(self, **kwargs)
            self.on_step = hook

        enroll.Enroller.__init__ = init  # type: ignore[method-assign]
    elif point == "in-transaction":
        _after(KeyManager, "record", nth)
    elif point == "before-flush":
        original_flush = cli_enroll._flush
        count = [0]

        def flush(stream: Any) -> None:
            count[0] += 1
            if count[0] == nth:
                _die()
            original_flush(stream)

        cli_enroll._flush = flush
    elif point == "after-flush":
        _after(cli_enroll, "_flush", nth)
    elif point == "after-record":
        _after(bulk, "_record_delivered", nth)
    elif point == "fetch-uncommitted":
        _after(RecoveryService, "_fetch", nth)
    elif point == "fetch-answered":
        _after(
            client.LocalRecoveryClient, "send", nth, when=lambda self, m: b'"action":"fetch"' in m
        )
    elif point == "fetch-audited":
        _after(recovery_admin, "flush_mail", nth)
    elif point == "fetch-written":
        _after(files, "write_atomically", nth)
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> None:
    job = json.loads(sys.argv[1])
    arm(job["point"], int(job.get("nth", 1)))
    from mailpki.cli.main import app

    sys.argv = ["mailpki", *job["argv"]]
    app()
    sys.exit(3)  # the kill never came


if __name__ == "__main__":
    main()
