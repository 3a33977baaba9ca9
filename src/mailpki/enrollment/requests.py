"""The approval step of enrollment: the rules decide, or the request waits for an officer.

Every decision is audited with its reasons: the rules' automatic ones, an officer's
approval or rejection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailpki.audit import AuditLog
from mailpki.ca.serials import show_serial
from mailpki.directory.entry import DirectoryEntry
from mailpki.errors import InputError, NotFoundError
from mailpki.notify.mail import queue
from mailpki.policy.approval import ApprovalRules, Decision, Facts, decide
from mailpki.store.db import Database
from mailpki.store.models import EnrollmentRequestRecord

PENDING, APPROVED, REJECTED, ENROLLED = "pending", "approved", "rejected", "enrolled"


class RequestQueued(InputError):
    """The request was not approved automatically; it waits for an officer."""

    exit_code = 5

    def __init__(self, message: str, request_id: int) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class RequestView:
    id: int
    login: str
    directory: str
    mail: str | None
    state: str
    reasons: list[str]
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "login": self.login, "directory": self.directory,
            "mail": self.mail, "state": self.state, "reasons": self.reasons,
            "created_at": self.created_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decided_by": self.decided_by, "note": self.note,
        }  # fmt: skip


def _view(row: EnrollmentRequestRecord) -> RequestView:
    return RequestView(
        row.id, row.login, row.directory, row.mail, row.state, json.loads(row.reasons),
        row.created_at, row.decided_at, row.decided_by, row.note,
    )  # fmt: skip


class ApprovalQueue:
    def __init__(
        self, db: Database, audit: AuditLog, rules: ApprovalRules, *, portal_url: str = ""
    ) -> None:
        self.db = db
        self.audit = audit
        self.rules = rules
        self.portal_url = portal_url  # named in the mail that tells a person the decision

    def authorize(self, entry: DirectoryEntry, *, actor: str) -> int | None:
        """Approve `entry` for enrollment, or queue it (RequestQueued names the reasons).

        Returns the id of an officer-approved request this enrollment uses up, if any."""
        with self.db.transaction() as session:
            approved = _request_in(session, entry, APPROVED)
            if approved is not None:
                return approved.id
            decision = decide(self.rules, Facts(True, entry.enabled, entry.mail, entry.groups))
            self._audit_decision(session, entry, decision, actor)
            if decision.approved:
                return None
            pending = _request_in(session, entry, PENDING)
            if pending is None:
                pending = EnrollmentRequestRecord(
                    login=entry.login, directory=entry.directory, mail=entry.mail,
                    entry=json.dumps(entry.to_dict(), sort_keys=True), state=PENDING,
                    reasons=json.dumps(list(decision.reasons)), created_at=datetime.now(UTC),
                )  # fmt: skip
                session.add(pending)
                session.flush()
            request_id = pending.id
        raise RequestQueued(
            f"request {request_id} for {entry.login} waits for an officer "
            f"({'; '.join(decision.reasons)}): 'mailpki requests approve {request_id}'",
            request_id,
        )

    def _audit_decision(
        self, session: Any, entry: DirectoryEntry, decision: Decision, actor: str
    ) -> None:
        self.audit.append(
            session,
            "request.decided",
            actor=actor,
            data={
                "login": entry.login, "directory": entry.directory, "mail": entry.mail,
                "approved": decision.approved, "reasons": list(decision.reasons),
            },
        )  # fmt: skip

    def mark_enrolled(self, request_id: int, serial: str) -> None:
        with self.db.transaction() as session:
            row = session.get(EnrollmentRequestRecord, request_id)
            if row is not None and row.state == APPROVED:
                row.state = ENROLLED
                row.note = ((row.note or "") + f" enrolled as {show_serial(serial)}").strip()

    def list(self, state: str | None = None) -> list[RequestView]:
        with self.db.session() as session:
            query = select(EnrollmentRequestRecord).order_by(EnrollmentRequestRecord.id)
            if state:
                query = query.where(EnrollmentRequestRecord.state == state)
            return [_view(r) for r in session.scalars(query)]

    def decide_manually(
        self, request_id: int, *, approve: bool, actor: str, note: str
    ) -> RequestView:
        """An officer approves or rejects a pending request (audited with the note)."""
        if len(note) > 500:
            raise InputError("the note is longer than 500 characters")
        with self.db.transaction() as session:
            row = session.get(EnrollmentRequestRecord, request_id)
            if row is None:
                raise NotFoundError(f"no enrollment request {request_id}")
            if row.state != PENDING:
                raise InputError(f"request {request_id} is already {row.state}")
            row.state = APPROVED if approve else REJECTED
            row.decided_at = datetime.now(UTC)
            row.decided_by = actor
            row.note = note or None
            self.audit.append(
                session,
                "request.approved" if approve else "request.rejected",
                actor=actor,
                data={"request_id": request_id, "login": row.login, "note": note},
            )
            if row.mail:
                subject, body = decision_notice(request_id, approve, note, self.portal_url)
                queue(session, kind="request.decided", to=row.mail, subject=subject, body=body)
            return _view(row)


def decision_notice(request_id: int, approved: bool, note: str, portal_url: str) -> tuple[str, str]:
    """(subject, body) of the mail that tells a person an officer's decision."""
    where = f" at {portal_url}" if portal_url else ""
    if approved:
        subject = "Your certificate request was approved"
        body = (
            f"Hello,\n\nyour request {request_id} for a secure mail certificate was approved.\n"
            f"Log on to the enrollment portal{where} again: your certificate is made at once.\n"
        )
    else:
        subject = "Your certificate request was declined"
        body = f"Hello,\n\nyour request {request_id} for a secure mail certificate was declined.\n"
    if note:
        body += f"\nThe officer's note: {note}\n"
    return subject, body + "\nIf you did not expect this mail, tell your IT security team.\n"


def _request_in(
    session: Session, entry: DirectoryEntry, state: str
) -> EnrollmentRequestRecord | None:
    """The person's request in `state`, if there is one."""
    return session.scalar(
        select(EnrollmentRequestRecord)
        .where(
            EnrollmentRequestRecord.login == entry.login,
            EnrollmentRequestRecord.directory == entry.directory,
            EnrollmentRequestRecord.state == state,
        )
        .limit(1)
    )
