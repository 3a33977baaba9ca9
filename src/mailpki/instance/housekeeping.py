"""Background chores of a running server: the key pool, lost deliveries and downloads,
queued mail, directory publishing, and the audit log's seal handed to its witnesses.

Each chore runs under a job lease in the shared database (store.leases): on several
nodes, one node at a time runs it, and when that node dies another takes it over once
the lease has run out (`LEASE_TTL` after its last run, so within a minute)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from mailpki.directory.publisher import safe_run
from mailpki.dns.publisher import safe_run as safe_dns_run
from mailpki.errors import MailPKIError
from mailpki.instance.audit_witnesses import hand_over_quietly
from mailpki.instance.enrollments import fill_pool, flush_mail, reconcile_deliveries
from mailpki.instance.instance import Instance
from mailpki.instance.invitations import remind_users
from mailpki.instance.lifecycle import run as run_lifecycle
from mailpki.instance.portal import Portal
from mailpki.store.leases import Leases

log = logging.getLogger(__name__)
ACTOR = "server:housekeeping"
INTERVAL_SECONDS = 15.0
LEASE_TTL = timedelta(seconds=45)
# The outbox is drained in batches of MAIL_BATCH (flush_mail's) for at most MAIL_SECONDS
# a cycle, well inside the lease.
MAIL_BATCH = 100
MAIL_SECONDS = 20.0
LIFECYCLE_EVERY = 3600.0  # seconds between lifecycle runs (notices, leavers, expiry)


class Housekeeping:
    """A daemon thread that, every `interval` seconds:
    revokes certificates whose key was escrowed but never delivered within its lease
    (or whose portal download expired unused), reminds people of unused invitations,
    retries queued notices, delivers due directory publications and SMIMEA updates, tops
    the key pool up to `keymanager.pool_size`, seals the audit log and hands its
    checkpoints to the witnesses (the recovery service, `audit.witness_file`, the
    auditors' daily mail), and once an hour runs the lifecycle (expiry notices, the
    officers' summary, leavers, expired certificates: see instance/lifecycle.py).

    With several server processes, each chore runs on the one node holding its lease;
    every chore is also idempotent, so a lease that runs out while its chore is still
    working (a slow directory) costs duplicate effort, never a duplicate effect."""

    def __init__(
        self,
        instance: Instance,
        *,
        interval: float = INTERVAL_SECONDS,
        portal: Portal | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.instance = instance
        self.portal = portal
        self.interval = interval
        self.leases = leases or Leases(instance.db)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lifecycle_at: float | None = None  # monotonic time of this node's last run

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for name, _ in self.chores():
            with contextlib.suppress(MailPKIError):  # else the lease simply runs out
                self.leases.release(name)

    def chores(self) -> list[tuple[str, Callable[[], None]]]:
        """(lease name, chore), in the order a cycle runs them."""
        chores: list[tuple[str, Callable[[], None]]] = [("reconcile", self._reconcile)]
        if self.portal is not None:
            chores.append(("portal-cleanup", self._portal_cleanup))
        chores += [
            ("invitation-reminders", self._remind),
            ("lifecycle", self._lifecycle),
            ("mail", self._flush_mail),
            ("publish", self._publish),
        ]
        if self.instance.config.get("dns.update_server"):
            chores.append(("smimea", self._publish_dns))
        if int(self.instance.config.get("keymanager.pool_size")) > 0:
            chores.append(("key-pool", self._fill_pool))
        chores.append(("witness", self._witness))
        return chores

    def run_once(self) -> list[str]:
        """One cycle: every chore whose lease this node holds or takes; returns their names."""
        ran = []
        for name, chore in self.chores():
            try:
                if not self.leases.acquire(name, LEASE_TTL):
                    continue
            except MailPKIError as exc:
                log.warning("cannot take the lease on %s: %s", name, exc)
                continue
            chore()
            ran.append(name)
        return ran

    def _reconcile(self) -> None:
        try:
            result = reconcile_deliveries(self.instance, actor=ACTOR, all_pending=False)
            if result.revoked:
                log.warning(
                    "revoked %d certificates whose key was never delivered", len(result.revoked)
                )
        except MailPKIError as exc:
            log.warning("reconcile failed: %s", exc)

    def _portal_cleanup(self) -> None:
        assert self.portal is not None
        try:
            withdrawn = self.portal.withdraw_unfetched(actor=ACTOR)
            if withdrawn:
                log.warning("revoked %d certificates never downloaded", len(withdrawn))
        except MailPKIError as exc:
            log.warning("portal clean-up failed: %s", exc)

    def _remind(self) -> None:
        try:
            # Safe on several nodes: each reminder first revokes the old link, conditionally.
            reminded = remind_users(self.instance, ACTOR)
            if reminded:
                log.info("%d invitation reminders queued", reminded)
        except MailPKIError as exc:
            log.warning("invitation reminders failed: %s", exc)

    def _lifecycle(self) -> None:
        now = time.monotonic()
        if self._lifecycle_at is not None and now - self._lifecycle_at < LIFECYCLE_EVERY:
            return
        self._lifecycle_at = now
        # Even two nodes running it at once (a lease that ran out) send nothing twice:
        # each notice, summary and revocation is claimed in the database.
        lifecycle = run_lifecycle(self.instance, actor=ACTOR, send_mail=False)
        for line in lifecycle.lines():
            log.info("lifecycle: %s", line)
        for error in lifecycle.errors:
            log.warning("lifecycle: %s", error)

    def _flush_mail(self) -> None:
        """Drain the outbox a batch at a time while batches come back full (a bulk
        invitation queues thousands at once), for at most MAIL_SECONDS a cycle."""
        until = time.monotonic() + MAIL_SECONDS
        while True:
            report = flush_mail(self.instance)
            if report is None or report.failed or report.skipped:
                return  # the transport is failing: the next cycle tries again
            if report.sent < MAIL_BATCH or time.monotonic() >= until:
                return

    def _publish(self) -> None:
        report = safe_run(self.instance.publisher)  # a directory outage: retried later
        if report is not None and report.failed:
            log.warning("publishing: %d jobs failed, retried with backoff", report.failed)

    def _publish_dns(self) -> None:
        try:
            dns_publisher = self.instance.dns_publisher
        except MailPKIError as exc:  # e.g. an unreadable TSIG key file
            log.warning("SMIMEA updates are off: %s", exc)
            return
        if dns_publisher is not None:
            report = safe_dns_run(dns_publisher)  # a DNS outage: retried later
            if report is not None and report.failed:
                log.warning("SMIMEA: %d updates failed, retried with backoff", report.failed)

    def _fill_pool(self) -> None:
        try:
            added = fill_pool(self.instance)
            if added:
                log.info("key pool: %d escrowed keys added", added)
        except MailPKIError as exc:  # e.g. no recovery service pinned yet
            log.warning("key pool refill failed: %s", exc)

    def _witness(self) -> None:
        # Best effort: a witness that is down is retried next cycle (and logged there).
        try:
            with self.instance.db.transaction() as session:
                self.instance.audit.checkpoint(session)
        except MailPKIError as exc:
            log.warning("sealing the audit log failed: %s", exc)
            return
        hand_over_quietly(self.instance)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._wake.wait(self.interval)
            self._wake.clear()
