"""Background chores of a running server: the key pool, lost deliveries and downloads,
queued mail."""

from __future__ import annotations

import logging
import threading

from mailpki.directory.publisher import safe_run
from mailpki.errors import MailPKIError
from mailpki.instance.enrollments import fill_pool, flush_mail, reconcile_deliveries
from mailpki.instance.instance import Instance
from mailpki.instance.invitations import remind_users
from mailpki.instance.portal import Portal

log = logging.getLogger(__name__)
ACTOR = "server:housekeeping"


class Housekeeping:
    """A daemon thread that, every `interval` seconds:
    revokes certificates whose key was escrowed but never delivered within its lease
    (or whose portal download expired unused), reminds people of unused invitations,
    retries queued notices, delivers due directory publications, and tops the key pool
    up to `keymanager.pool_size`.

    With several server processes each does the same; every chore is idempotent (the
    pool target is a floor, so overshoot is small and harmless)."""

    def __init__(
        self, instance: Instance, *, interval: float = 30.0, portal: Portal | None = None
    ) -> None:
        self.instance = instance
        self.portal = portal
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run_once(self) -> None:
        try:
            result = reconcile_deliveries(self.instance, actor=ACTOR, all_pending=False)
            if result.revoked:
                log.warning(
                    "revoked %d certificates whose key was never delivered", len(result.revoked)
                )
        except MailPKIError as exc:
            log.warning("reconcile failed: %s", exc)
        if self.portal is not None:
            try:
                withdrawn = self.portal.withdraw_unfetched(actor=ACTOR)
                if withdrawn:
                    log.warning("revoked %d certificates never downloaded", len(withdrawn))
            except MailPKIError as exc:
                log.warning("portal clean-up failed: %s", exc)
        try:
            # Safe on several nodes: each reminder first revokes the old link, conditionally.
            reminded = remind_users(self.instance, ACTOR)
            if reminded:
                log.info("%d invitation reminders queued", reminded)
        except MailPKIError as exc:
            log.warning("invitation reminders failed: %s", exc)
        flush_mail(self.instance)
        report = safe_run(self.instance.publisher)  # a directory outage: retried later
        if report is not None and report.failed:
            log.warning("publishing: %d jobs failed, retried with backoff", report.failed)
        if int(self.instance.config.get("keymanager.pool_size")) > 0:
            try:
                added = fill_pool(self.instance)
                if added:
                    log.info("key pool: %d escrowed keys added", added)
            except MailPKIError as exc:  # e.g. no recovery service pinned yet
                log.warning("key pool refill failed: %s", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._wake.wait(self.interval)
            self._wake.clear()
