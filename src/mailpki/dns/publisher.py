"""Publishing SMIMEA records through the durable outbox, like directory publishing.

Issuing, renewing (issuing again) or revoking a certificate queues a job for its mail
address in the same transaction (the publish queue, action ``smimea``). Delivering a
job sends one RFC 2136 update that makes the address's SMIMEA set exactly its
certificates valid at that moment, so jobs are idempotent and their order does not
matter; expired certificates drop out at the next job or ``dns sync``. A DNS server
that is down or refuses the TSIG key leaves the job queued, retried with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailpki.dns.settings import DnsSettings
from mailpki.dns.smimea import SmimeaRecord, in_zone, owner_name, record_for
from mailpki.dns.updater import DnsUpdater
from mailpki.errors import DnsError, MailPKIError
from mailpki.store.db import Database
from mailpki.store.models import PublishJob
from mailpki.store.publish_queue import PublishQueue, add_job

__all__ = ["SMIMEA_ACTION", "DnsPublisher", "DnsReport", "queue_update", "safe_run"]

log = logging.getLogger(__name__)
SMIMEA_ACTION = "smimea"


def queue_update(session: Session, *, serial: str, email: str) -> None:
    """Queue an SMIMEA update for `email` in the caller's transaction."""
    add_job(session, serial=serial, email=email, action=SMIMEA_ACTION)


@dataclass
class DnsReport:
    updated: int = 0  # addresses whose SMIMEA set was sent
    skipped: int = 0  # addresses outside the zone
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class DnsPublisher:
    """Delivers queued SMIMEA updates to the zone's primary server."""

    def __init__(
        self,
        db: Database,
        settings: DnsSettings,
        *,
        certificates_of: Callable[[str], list[bytes]],
        updater: DnsUpdater | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.certificates_of = certificates_of  # DER of an address's valid certificates
        self.updater = updater or DnsUpdater(settings)
        self._clock = clock or (lambda: datetime.now(UTC))
        self.queue = PublishQueue(db, (SMIMEA_ACTION,), clock=lambda: self._clock())

    def records(self, email: str) -> list[SmimeaRecord]:
        """The SMIMEA records `email` should have now."""
        return [
            record_for(email, der, ttl=self.settings.ttl) for der in self.certificates_of(email)
        ]

    def pending(self) -> int:
        return self.queue.pending()

    def run_once(self, *, limit: int = 1000, ignore_backoff: bool = False) -> DnsReport:
        """Deliver due jobs, oldest first, one update per address. The first failure
        stops the run (there is one server): the rest wait for the next run."""
        report = DnsReport()
        with self.db.session() as session:
            query = select(PublishJob.id, PublishJob.email).where(
                PublishJob.done_at.is_(None), PublishJob.action == SMIMEA_ACTION
            )
            if not ignore_backoff:
                query = query.where(PublishJob.next_attempt_at <= self._clock())
            jobs = list(session.execute(query.order_by(PublishJob.id).limit(limit)))
        by_email: dict[str, list[int]] = {}
        for job_id, email in jobs:
            by_email.setdefault(email, []).append(job_id)
        failure: str | None = None
        for email, ids in by_email.items():
            if failure is not None:
                self.queue.retry(ids, failure)
                report.failed += 1
                continue
            try:
                if not in_zone(email, self.settings.zone):
                    self.queue.finish(ids, note=f"outside the zone {self.settings.zone}")
                    report.skipped += 1
                    continue
                self.updater.replace(owner_name(email), self.records(email))
            except DnsError as exc:
                failure = str(exc)
                self.queue.retry(ids, failure)
                report.failed += 1
                report.errors.append(failure)
                continue
            except MailPKIError as exc:  # an address the DNS cannot hold: never deliverable
                self.queue.finish(ids, note=str(exc))
                report.skipped += 1
                continue
            self.queue.finish(ids, note=None)
            report.updated += 1
        return report

    def sync(
        self, emails: list[str], *, progress: Callable[[int], None] | None = None
    ) -> DnsReport:
        """Deliver every queued job now, then send each address's full set (repairs a
        zone edited by hand or restored from an old backup); `progress(n)` after each."""
        report = self.run_once(limit=1_000_000, ignore_backoff=True)
        if report.failed:
            return report
        for done, email in enumerate(emails, 1):
            if in_zone(email, self.settings.zone):
                try:
                    self.updater.replace(owner_name(email), self.records(email))
                except DnsError as exc:
                    report.failed += 1
                    report.errors.append(f"{email}: {exc}")
                    break  # one server: the others would fail the same way
                report.updated += 1
            if progress is not None:
                progress(done)
        return report


def safe_run(publisher: DnsPublisher) -> DnsReport | None:
    try:
        return publisher.run_once()
    except MailPKIError as exc:
        log.warning("SMIMEA updates failed: %s", exc)
        return None
