"""The console's audit log browser: records newest first, filtered and paged.

Filters: the event (exact, or a prefix ending in a dot: `cert.`), the actor (part of
it), and a date range (YYYY-MM-DD, UTC, both ends included). Every filter value is a
bound parameter; LIKE wildcards in it match only themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, select

from mailpki.errors import InputError
from mailpki.instance.console_access import ConsoleUser, require
from mailpki.instance.console_people import AuditLine
from mailpki.instance.instance import Instance
from mailpki.policy.operator_roles import Permission
from mailpki.store.models import AuditRecord

__all__ = ["AuditFilter", "AuditPage", "audit_page", "parse_filter"]

PAGE_SIZE = 50
MAX_PAGE = 1_000_000
_EVENT_RE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*\.?")


@dataclass(frozen=True)
class AuditFilter:
    event: str = ""
    actor: str = ""
    since: date | None = None
    until: date | None = None
    page: int = 1


@dataclass(frozen=True)
class AuditPage:
    filter: AuditFilter
    lines: list[AuditLine]
    total: int
    pages: int


def _day(text: str, name: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{name} must be a date such as 2026-01-31") from None


def parse_filter(
    *, event: str = "", actor: str = "", since: str = "", until: str = "", page: str = ""
) -> AuditFilter:
    """A filter from the page's query string; InputError says what is wrong."""
    event, actor = event.strip(), actor.strip()
    if event and (len(event) > 64 or not _EVENT_RE.fullmatch(event)):
        raise InputError("the event is a dotted name such as cert.revoked, or a prefix: cert.")
    if len(actor) > 320 or any(ord(c) < 32 for c in actor):
        raise InputError("the actor filter is too long or has control characters")
    if page.strip() and (not page.strip().isdigit() or not 1 <= int(page) <= MAX_PAGE):
        raise InputError("the page is a whole number from 1")
    first, last = _day(since, "from"), _day(until, "to")
    if first and last and first > last:
        raise InputError("the first date is after the last")
    return AuditFilter(event, actor, first, last, int(page) if page.strip() else 1)


def audit_page(instance: Instance, user: ConsoleUser | None, wanted: AuditFilter) -> AuditPage:
    require(user, Permission.READ_AUDIT)
    where = []
    if wanted.event.endswith("."):
        where.append(AuditRecord.event.startswith(wanted.event, autoescape=True))
    elif wanted.event:
        where.append(AuditRecord.event == wanted.event)
    if wanted.actor:
        where.append(AuditRecord.actor.contains(wanted.actor, autoescape=True))
    # Record times are ISO 8601 in UTC: a date's string sorts before every time that day.
    if wanted.since:
        where.append(AuditRecord.time >= wanted.since.isoformat())
    if wanted.until:
        where.append(AuditRecord.time < (wanted.until + timedelta(days=1)).isoformat())
    with instance.db.session() as session:
        total = int(
            session.scalar(select(func.count()).select_from(AuditRecord).where(*where)) or 0
        )
        rows = session.execute(
            select(
                AuditRecord.seq,
                AuditRecord.time,
                AuditRecord.event,
                AuditRecord.actor,
                AuditRecord.data,
            )
            .where(*where)
            .order_by(AuditRecord.seq.desc())
            .limit(PAGE_SIZE)
            .offset((wanted.page - 1) * PAGE_SIZE)
        )
        lines = [AuditLine(seq, time, event, actor, data) for seq, time, event, actor, data in rows]
    return AuditPage(wanted, lines, total, max(1, -(-total // PAGE_SIZE)))
