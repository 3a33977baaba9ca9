"""Keeps the Key Manager's pool of escrowed keys full while the server runs."""

from __future__ import annotations

import logging
import threading

from mailpki.errors import MailPKIError
from mailpki.instance.enrollments import fill_pool
from mailpki.instance.instance import Instance

log = logging.getLogger(__name__)


class PoolRefiller:
    """A daemon thread that tops the pool up to `keymanager.pool_size` every `interval`
    seconds, or at once after `wake()` (an enrollment took a key). With several server
    processes each refills; the target is a floor, so overshoot is small and harmless."""

    def __init__(self, instance: Instance, *, interval: float = 30.0) -> None:
        self.instance = instance
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if int(self.instance.config.get("keymanager.pool_size")) <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="key pool refill", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                added = fill_pool(self.instance)
                if added:
                    log.info("key pool: %d escrowed keys added", added)
            except MailPKIError as exc:  # e.g. the recovery service is not pinned yet
                log.warning("key pool refill failed: %s", exc)
            self._wake.wait(self.interval)
            self._wake.clear()
