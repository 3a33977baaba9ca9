"""Who may do what in the operator console and the JSON API (pure policy, no I/O).

| role | may |
|---|---|
| `officer` | read and decide queued enrollment requests |
| `operator` | search people, read certificates, revoke them, invite people (to enroll, or to renew in the portal) |
| `auditor` | read everything (people, certificates, requests), the audit status and the recovery report; change nothing |

Signing a recovery request or approval stays with an administrator's own key, in the CLI.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

from mailpki.errors import InputError

OperatorRole = Literal["officer", "operator", "auditor"]
OPERATOR_ROLES: tuple[str, ...] = get_args(OperatorRole)


class Permission(StrEnum):
    READ_PEOPLE = "people:read"
    READ_CERTIFICATES = "certificates:read"
    REVOKE = "certificates:revoke"
    INVITE = "invitations:create"
    READ_REQUESTS = "requests:read"
    DECIDE_REQUESTS = "requests:decide"
    READ_AUDIT = "audit:read"
    READ_RECOVERY_REPORT = "recovery:report"


_GRANTS: dict[str, frozenset[Permission]] = {
    "officer": frozenset({Permission.READ_REQUESTS, Permission.DECIDE_REQUESTS}),
    "operator": frozenset(
        {
            Permission.READ_PEOPLE,
            Permission.READ_CERTIFICATES,
            Permission.REVOKE,
            Permission.INVITE,
        }
    ),
    "auditor": frozenset(
        {
            Permission.READ_PEOPLE,
            Permission.READ_CERTIFICATES,
            Permission.READ_REQUESTS,
            Permission.READ_AUDIT,
            Permission.READ_RECOVERY_REPORT,
        }
    ),
}


def parse_operator_role(text: str) -> OperatorRole:
    value = text.strip().lower()
    if value not in OPERATOR_ROLES:
        raise InputError(f"unknown role {text!r}; one of: {', '.join(OPERATOR_ROLES)}")
    return value  # type: ignore[return-value]


def allows(role: str, permission: Permission) -> bool:
    return permission in _GRANTS.get(role, frozenset())
