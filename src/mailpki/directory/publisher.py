"""Publishing certificates to the directory, through an outbox.

A job is queued in the transaction that issues or revokes the certificate, so the two
cannot disagree; a worker (`serve`'s housekeeping, `directory sync`) delivers jobs,
retrying with exponential backoff while a directory is down. `sync` also reconciles:
every valid certificate of ours is published, revoked, expired and superseded (renewed)
ones are removed, and certificates from our issuer that we do not know are removed.
Another CA's certificates are never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailpki.directory.registry import DirectoryRegistry
from mailpki.errors import DirectoryError, DirectoryUnavailable, MailPKIError
from mailpki.store.db import Database
from mailpki.store.models import CertificateRecord, PublishJob
from mailpki.store.publish_queue import PublishQueue, add_job

log = logging.getLogger(__name__)
PUBLISH, UNPUBLISH = "publish", "unpublish"
# The publish queue also carries other publishers' jobs (DNS SMIMEA updates): this one
# delivers only its own actions.
ACTIONS = (PUBLISH, UNPUBLISH)


def queue_job(session: Session, *, serial: str, email: str, action: str) -> None:
    """Queue a job in the caller's transaction (the issue or the revocation)."""
    add_job(session, serial=serial, email=email, action=action)


@dataclass
class PublishReport:
    published: int = 0
    unpublished: int = 0
    skipped: int = 0  # no directory entry for that mail: nothing to publish to
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)  # directories down during a sync


class Publisher:
    def __init__(
        self,
        db: Database,
        registry: DirectoryRegistry,
        *,
        issuer: x509.Name,
        earlier_issuers: tuple[x509.Name, ...] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.issuer = issuer
        # After an issuing-CA rollover the older CAs' certificates are ours too.
        self.issuers = {issuer, *earlier_issuers}
        self._clock = clock or (lambda: datetime.now(UTC))
        self.queue = PublishQueue(db, ACTIONS, clock=lambda: self._clock())

    def pending(self) -> int:
        return self.queue.pending()

    def run_once(
        self, *, limit: int = 1000, ignore_backoff: bool = False, down: set[str] | None = None
    ) -> PublishReport:
        """Deliver due jobs, oldest first; a failing directory is retried later.

        `down` collects the directories that failed as a whole (an outage: their other
        jobs are not tried); an error about one entry fails that job only."""
        now = self._clock()
        report = PublishReport()
        with self.db.session() as session:
            query = (
                select(PublishJob, CertificateRecord.der)
                .join(CertificateRecord, CertificateRecord.serial == PublishJob.serial)
                .where(PublishJob.done_at.is_(None), PublishJob.action.in_(ACTIONS))
            )
            if not ignore_backoff:
                query = query.where(PublishJob.next_attempt_at <= now)
            jobs = [(job.id, job.email, job.action, der) for job, der in
                    session.execute(query.order_by(PublishJob.id).limit(limit))]  # fmt: skip
        if down is None:
            down = set()  # directories that failed in this run: skip their other jobs
        for job_id, email, action, der in jobs:
            directory = self.registry.for_mail(email)
            if directory is None or directory.name in down:
                if directory is None:
                    self.queue.finish([job_id])
                    report.skipped += 1
                else:
                    self.queue.retry([job_id], "the directory was unreachable earlier in this run")
                    report.failed += 1
                continue
            try:
                entry = directory.find_by_mail(email)
                if entry is None:
                    self.queue.finish([job_id])
                    report.skipped += 1
                    continue
                if action == PUBLISH:
                    directory.publish(entry.dn, der)
                    report.published += 1
                else:
                    directory.unpublish(entry.dn, der)
                    report.unpublished += 1
                self.queue.finish([job_id])
            except DirectoryError as exc:
                if isinstance(exc, DirectoryUnavailable):
                    down.add(directory.name)
                self.queue.retry([job_id], str(exc))
                report.failed += 1
                report.errors.append(str(exc))
        return report

    # -- reconcile ----------------------------------------------------------------------

    def sync(self) -> PublishReport:
        """Deliver every queued job now, then make the directory match the CA."""
        # A directory that failed is not asked again for every other mail: with one
        # that times out, that would be one timeout per certificate.
        down: set[str] = set()
        report = self.run_once(limit=1_000_000, ignore_backoff=True, down=down)
        now = self._clock()
        wanted: dict[str, set[bytes]] = {}
        unwanted: dict[str, set[bytes]] = {}
        with self.db.session() as session:
            rows = session.execute(
                select(
                    CertificateRecord.email,
                    CertificateRecord.der,
                    CertificateRecord.status,
                    CertificateRecord.not_after,
                    CertificateRecord.superseded_by,
                ).where(
                    CertificateRecord.issuer.not_in(("root", "self")),
                    CertificateRecord.email.is_not(None),
                )
            )
            for email, der, status, not_after, superseded_by in rows:
                # A renewed (superseded) certificate stays valid but is not published.
                valid = status == "valid" and not_after > now and superseded_by is None
                (wanted if valid else unwanted).setdefault(str(email).lower(), set()).add(der)
        for email in sorted(set(wanted) | set(unwanted)):
            directory = self.registry.for_mail(email)
            if directory is None:
                continue
            if directory.name in down:
                report.failed += 1
                continue
            try:
                entry = directory.find_by_mail(email)
                if entry is None:
                    continue
                present = set(directory.certificates(entry.dn))
                for der in wanted.get(email, set()) - present:
                    directory.publish(entry.dn, der)
                    report.published += 1
                ours_unknown = {
                    der for der in present
                    if self._ours(der) and der not in wanted.get(email, set())
                }  # fmt: skip
                for der in ours_unknown:
                    directory.unpublish(entry.dn, der)
                    report.unpublished += 1
            except DirectoryError as exc:
                if isinstance(exc, DirectoryUnavailable):
                    down.add(directory.name)
                report.failed += 1
                report.errors.append(f"{email}: {exc}")
        report.unavailable = sorted(down)
        return report

    def _ours(self, der: bytes) -> bool:
        """Issued by this instance's issuing CA (by issuer name); never touch others'."""
        try:
            return x509.load_der_x509_certificate(der).issuer in self.issuers
        except ValueError:
            return False


def safe_run(publisher: Publisher) -> PublishReport | None:
    try:
        return publisher.run_once()
    except MailPKIError as exc:
        log.warning("publishing failed: %s", exc)
        return None
