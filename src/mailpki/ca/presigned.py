"""Pre-signed OCSP answers (RFC 5019): signed ahead, stored, served from memory.

Every unexpired certificate of the issuing CA has its nonce-less answer (SHA-1
CertID) signed ahead of time and stored in ``ocsp_responses``; each server process
loads them into its responder's memory, where a plain GET is answered without
signing and without the database (ca/ocsp.py).

- Refresh: an answer is signed again once less than half of its validity is left
  (``ocsp.validity_hours``, 24 h by default: at 12 h), by whichever server's
  background pass sees it first. Two servers may both re-sign one answer; both
  answers are correct, the later write wins.
- Revocation: the revoking process signs the "revoked" answer at once, stores it
  and serves it (``refresh``).
- Several servers: every ``sync_interval`` (10 s) each process loads the answers
  stored since its last pass, and drops from memory any certificate revoked since
  then whose "revoked" answer it has not loaded yet (that request then goes to the
  signing path, which reads the status from the database). If passes fail for
  ``ocsp.MAX_STALENESS`` (60 s) the responder stops using the map. So another
  server's memory serves a stale "good" for at most ~10 s after a revocation
  (20 s with a slow pass), never more than 60 s. Writers' clocks may differ by up
  to ``_OVERLAP`` (30 s): each pass re-reads that much of the past.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from cryptography import x509
from sqlalchemy import Table, and_, bindparam, delete, or_, select, update

from mailpki.ca.ocsp import CertStatus, OCSPResponder, PresignedAnswer
from mailpki.ca.serials import to_hex
from mailpki.errors import MailPKIError
from mailpki.store.db import Database
from mailpki.store.models import CertificateRecord, OCSPResponseRecord

__all__ = ["PresignedResponses", "RefreshReport"]

log = logging.getLogger(__name__)

_OVERLAP = timedelta(seconds=30)
_BATCH = 1_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REASONS = {flag.name: flag for flag in x509.ReasonFlags}  # stored name -> flag


def _state(text: str) -> Literal["good", "revoked", "unknown"]:
    return "revoked" if text == "revoked" else "unknown" if text == "unknown" else "good"


@dataclass(frozen=True)
class RefreshReport:
    signed: int
    seconds: float


class PresignedResponses:
    """Keeps the pre-signed answers of one CA signed, stored and loaded."""

    def __init__(
        self,
        *,
        db: Database,
        responder: Callable[[], OCSPResponder],
        status: Callable[[int], CertStatus | None],
        issuer: str,
        sync_interval: float = 10.0,
    ) -> None:
        self.db = db
        self._responder = responder
        self._status = status
        self.issuer = issuer
        self.sync_interval = sync_interval
        self._since = _EPOCH  # wall time of the last sync's start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._purged_at = float("-inf")

    # -- signing ----------------------------------------------------------------------------

    @staticmethod
    def _cert_status(status: str, revoked_at: datetime | None, reason: str | None) -> CertStatus:
        if status == "revoked" and revoked_at is not None:
            return CertStatus("revoked", revoked_at=revoked_at, reason=_REASONS.get(reason or ""))
        return CertStatus("good")

    def refresh(self, serial: int) -> PresignedAnswer:
        """Sign, store and serve the answer for one certificate now (after a revocation)."""
        responder = self._responder()
        answer = responder.presign(serial, self._status(serial))
        self._store([answer])
        responder.load_presigned([answer])
        return answer

    def refresh_due(self, *, limit: int = _BATCH) -> int:
        """Sign the answers that are missing, past half their validity, or say "good" for
        a revoked certificate (at most ``limit``); store and serve them. How many."""
        responder = self._responder()
        now = datetime.now(UTC)
        due = now + responder.validity / 2
        cert, resp = CertificateRecord, OCSPResponseRecord
        query = (
            select(cert.serial, cert.status, cert.revoked_at, cert.revocation_reason)
            .outerjoin(resp, resp.serial == cert.serial)
            .where(
                cert.issuer == self.issuer,
                cert.not_after > now,
                or_(
                    resp.serial.is_(None),
                    resp.next_update <= due,
                    and_(cert.status == "revoked", resp.status != "revoked"),
                ),
            )
            .limit(limit)
        )
        with self.db.session() as session:
            rows = session.execute(query).all()
        answers = [
            responder.presign(int(serial, 16), self._cert_status(status, revoked_at, reason))
            for serial, status, revoked_at, reason in rows
        ]
        if answers:
            self._store(answers)
            responder.load_presigned(answers)
        return len(answers)

    def refresh_all(self, *, progress: Callable[[int], None] | None = None) -> RefreshReport:
        """Sign everything that is due, batch after batch."""
        t0 = time.perf_counter()
        total = 0
        while (signed := self.refresh_due()) > 0:
            total += signed
            if progress is not None:
                progress(total)
        return RefreshReport(total, time.perf_counter() - t0)

    def _store(self, answers: list[PresignedAnswer]) -> None:
        now = datetime.now(UTC)
        rows = [
            {
                "key": to_hex(a.serial),
                "status": a.status,
                "this_update": a.this_update,
                "next_update": a.next_update,
                "updated_at": now,
                "der": a.der,
            }
            for a in answers
        ]
        table = cast(Table, OCSPResponseRecord.__table__)
        for attempt in range(3):
            try:
                with self.db.transaction() as session:
                    keys = [row["key"] for row in rows]
                    existing = set(
                        session.scalars(
                            select(OCSPResponseRecord.serial).where(
                                OCSPResponseRecord.serial.in_(keys)
                            )
                        )
                    )
                    old = [row for row in rows if row["key"] in existing]
                    new = [
                        {k if k != "key" else "serial": v for k, v in row.items()}
                        for row in rows
                        if row["key"] not in existing
                    ]
                    if old:
                        session.execute(
                            update(table).where(table.c.serial == bindparam("key")),
                            old,
                            execution_options={"synchronize_session": False},
                        )
                    if new:
                        session.execute(table.insert(), new)
                return
            except MailPKIError:
                if attempt == 2:
                    raise
                # Another server inserted one of these at the same moment: go again.

    # -- loading ----------------------------------------------------------------------------

    def sync(self) -> int:
        """Load answers stored since the last pass; drop revoked-since "good" answers.
        Returns how many answers were loaded."""
        started_mono = time.monotonic()
        started = datetime.now(UTC)
        since = self._since - _OVERLAP if self._since > _EPOCH else _EPOCH
        responder = self._responder()
        resp = OCSPResponseRecord
        loaded: list[PresignedAnswer] = []
        revoked_loaded: set[int] = set()
        with self.db.session() as session:
            rows = session.execute(
                select(
                    resp.serial, resp.status, resp.this_update, resp.next_update, resp.der
                ).where(resp.updated_at >= since, resp.next_update > started)
            )
            for serial_hex, status, this_update, next_update, der in rows:
                serial = int(serial_hex, 16)
                loaded.append(
                    PresignedAnswer(serial, _state(status), this_update, next_update, der)
                )
                if status == "revoked":
                    revoked_loaded.add(serial)
                if len(loaded) >= 10_000:
                    responder.load_presigned(loaded)
                    loaded = []
            revoked = [
                int(serial_hex, 16)
                for serial_hex in session.scalars(
                    select(CertificateRecord.serial).where(
                        CertificateRecord.issuer == self.issuer,
                        CertificateRecord.status == "revoked",
                        CertificateRecord.revoked_at >= since,
                    )
                )
            ]
        count = len(loaded)
        responder.load_presigned(loaded)
        stale = [serial for serial in revoked if serial not in revoked_loaded]
        if stale:
            # Revoked elsewhere, answer not stored yet: the signing path reads the store.
            responder.drop_presigned(stale)
        self._since = started
        responder.mark_synced(started_mono)
        return count

    def answers(self) -> Iterator[PresignedAnswer]:
        """Every stored answer still within its validity, for unexpired certificates."""
        now = datetime.now(UTC)
        resp, cert = OCSPResponseRecord, CertificateRecord
        with self.db.session() as session:
            rows = session.execute(
                select(resp.serial, resp.status, resp.this_update, resp.next_update, resp.der)
                .join(cert, cert.serial == resp.serial)
                .where(resp.next_update > now, cert.not_after > now)
                .execution_options(yield_per=_BATCH)
            )
            for serial_hex, status, this_update, next_update, der in rows:
                yield PresignedAnswer(
                    int(serial_hex, 16), _state(status), this_update, next_update, der
                )

    def purge(self) -> int:
        """Delete stored answers whose validity has ended (expired certificates)."""
        with self.db.transaction() as session:
            result = session.execute(
                delete(OCSPResponseRecord).where(
                    OCSPResponseRecord.next_update <= datetime.now(UTC) - timedelta(days=1)
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- the background pass ---------------------------------------------------------------

    def run_once(self, *, budget: float = 5.0) -> None:
        """One pass: load what changed, sign what is due for up to ``budget`` s, and
        (hourly) delete answers that ended more than a day ago."""
        self.sync()
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline and self.refresh_due() > 0:
            pass
        if time.monotonic() - self._purged_at > 3600:
            self.purge()
            self._purged_at = time.monotonic()

    def start(self) -> None:
        """Load everything now, then keep it fresh from a daemon thread."""
        with self._lock:
            if self._thread is not None:
                return
            self.sync()
            self._thread = threading.Thread(target=self._run, name="ocsp-presign", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # keep the thread alive; the map's staleness bound applies
                log.exception("pre-signed OCSP pass failed")
            self._stop.wait(self.sync_interval)
