"""Worker processes that do not outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 0.2


def stop_with_parent(parent_pid: int) -> None:
    """Call first thing in a worker forked by `parent_pid`: when that process dies (even
    by SIGKILL), this one is killed too, so nothing goes on working for a parent that
    can no longer report the results.

    Linux: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG).
    Elsewhere, or if prctl is refused: a daemon thread watches the parent's pid.
    Either way, a parent already gone before this call ends the worker at once.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if not armed:
        threading.Thread(
            target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True
        ).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(1)
