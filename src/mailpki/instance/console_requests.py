"""The console's queues: enrollment requests waiting for an officer, and the recovery
requests with their approvals and the report "keys recovered per administrator".

Recovery is read-only here: a recovery request or approval is signed with an
administrator's own key, in the CLI. With the recovery service on another host, its
records are read there (signed queries from the CLI); the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailpki.enrollment.requests import PENDING, RequestView
from mailpki.errors import InputError, NotFoundError
from mailpki.instance.console_access import ConsoleUser, require
from mailpki.instance.directory_ops import decide_request
from mailpki.instance.instance import Instance
from mailpki.instance.recovery_admin import list_requests, report
from mailpki.policy.operator_roles import Permission

__all__ = ["RecoveryOverview", "decide", "pending_requests", "recovery_overview"]


def pending_requests(instance: Instance, user: ConsoleUser | None) -> list[RequestView]:
    require(user, Permission.READ_REQUESTS)
    return instance.approvals.list(PENDING)


def decide(
    instance: Instance, user: ConsoleUser | None, request_id: int, *, approve: bool, note: str
) -> RequestView:
    """An officer's decision (audited as console:LOGIN); nobody decides their own request."""
    officer = require(user, Permission.DECIDE_REQUESTS)
    found = [r for r in instance.approvals.list(PENDING) if r.id == request_id]
    if not found:
        raise NotFoundError(f"no pending request {request_id}")
    own_mail = officer.mail.lower() if officer.mail else None
    if found[0].login == officer.login or (own_mail and (found[0].mail or "").lower() == own_mail):
        raise InputError("you cannot decide your own request: another officer must")
    view = decide_request(instance, request_id, approve=approve, actor=officer.actor, note=note)
    instance.seal()
    return view


@dataclass(frozen=True)
class RecoveryOverview:
    local: bool  # False: the recovery service runs apart (read it with the CLI)
    requests: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    recoveries: list[dict[str, Any]]
    per_admin: list[tuple[str, int]]  # (administrator, keys recovered), most first


def recovery_overview(
    instance: Instance,
    user: ConsoleUser | None,
    *,
    admin: str | None = None,
    since: str | None = None,
) -> RecoveryOverview:
    require(user, Permission.READ_RECOVERY_REPORT)
    if admin is not None and (len(admin) > 320 or any(ord(c) < 32 for c in admin)):
        raise InputError("the administrator filter is not a mail address")
    if not instance.recovery_client.is_local:
        return RecoveryOverview(False, [], [], [], [])
    recoveries = report(instance, None, recovered_by=admin or None, since=since or None)
    counts: dict[str, int] = {}
    for row in recoveries:
        counts[str(row["recovered_by"])] = counts.get(str(row["recovered_by"]), 0) + 1
    service = instance.recovery_client.local_service()
    return RecoveryOverview(
        True,
        list_requests(instance, None),
        service.alerts(),
        recoveries,
        sorted(counts.items(), key=lambda item: (-item[1], item[0])),
    )
