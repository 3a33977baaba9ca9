"""Local operator accounts of the console: add, list, remove, change a password, log on.

For instances without an LDAP directory. An account has a role (officer, operator,
auditor), an argon2id password hash and a TOTP secret (required for every role), sealed
under the instance secret. The secret is shown once, when the account is added, as an
`otpauth://` URI. Every change and every logon, good or refused, is audited.

A logged-on operator's session identity is the dict `session_identity` makes (the
console reads `operator_roles`); such an identity is nobody's mailbox: it cannot enroll.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from mailpki.auth.operators import (
    MAX_OPERATOR_PASSWORD,
    OperatorIdentity,
    check_operator_login,
    operator_hasher,
    totp_bound_to,
)
from mailpki.auth.totp import new_secret, provisioning_uri, secret_base32
from mailpki.errors import AuthenticationError, InputError, NotFoundError
from mailpki.instance.instance import Instance
from mailpki.policy.operator_roles import parse_operator_role
from mailpki.policy.passwords import check_password
from mailpki.store.models import OperatorAccount

__all__ = [
    "MIN_OPERATOR_PASSWORD",
    "OPERATOR_SOURCE",
    "TOTP_ISSUER",
    "NewOperator",
    "OperatorInfo",
    "OperatorView",
    "add_operator",
    "change_password",
    "is_operator_identity",
    "list_operators",
    "log_on",
    "operator_still_valid",
    "operator_view",
    "remove_operator",
    "session_identity",
]

MIN_OPERATOR_PASSWORD = 12
TOTP_ISSUER = "mailpki"
OPERATOR_SOURCE = "operator"  # session identities of local operators carry this "source"


@dataclass(frozen=True)
class OperatorInfo:
    """An account as listed: never its password hash nor its TOTP secret."""

    login: str
    role: str
    created_at: datetime
    created_by: str
    password_changed_at: datetime
    last_logon_at: datetime | None


@dataclass(frozen=True)
class NewOperator:
    """A new account and its TOTP secret, to show once and then forget."""

    info: OperatorInfo
    totp_secret: str  # base32, for typing into an app by hand
    totp_uri: str  # otpauth://totp/... for the QR code


def _info(row: OperatorAccount) -> OperatorInfo:
    return OperatorInfo(
        row.login,
        row.role,
        row.created_at,
        row.created_by,
        row.password_changed_at,
        row.last_logon_at,
    )


def _checked_password(password: str, login: str) -> str:
    if len(password) > MAX_OPERATOR_PASSWORD:
        raise InputError(f"the password is longer than {MAX_OPERATOR_PASSWORD} characters")
    check_password(password, password, min_length=MIN_OPERATOR_PASSWORD, avoid=(login,))
    return password


def add_operator(
    instance: Instance, login: str, role: str, password: str, *, actor: str
) -> NewOperator:
    """A new account with a fresh TOTP secret (returned once); audited as operator.added.
    Bad input (login, role, password, a taken login) changes nothing."""
    check_operator_login(login)
    checked_role = parse_operator_role(role)
    _checked_password(password, login)
    secret = new_secret()
    sealed = instance.sealer.seal(secret, totp_bound_to(login))
    now = datetime.now(UTC)
    row = OperatorAccount(
        login=login,
        role=checked_role,
        password_hash=operator_hasher().hash(password),
        totp_salt=sealed.salt,
        totp_nonce=sealed.nonce,
        totp_secret_sealed=sealed.ciphertext,
        created_at=now,
        created_by=actor,
        password_changed_at=now,
    )
    with instance.db.transaction() as session:
        if session.scalar(select(OperatorAccount.id).where(OperatorAccount.login == login)):
            raise InputError(
                f"an operator named {login!r} exists ('mailpki operator list'); "
                "remove it first or pick another login"
            )
        session.add(row)
        instance.audit.append(
            session, "operator.added", actor=actor, data={"login": login, "role": checked_role}
        )
        info = _info(row)
    return NewOperator(
        info, secret_base32(secret), provisioning_uri(secret, login, issuer=TOTP_ISSUER)
    )


def list_operators(instance: Instance) -> list[OperatorInfo]:
    with instance.db.session() as session:
        rows = session.scalars(select(OperatorAccount).order_by(OperatorAccount.login)).all()
        return [_info(row) for row in rows]


def remove_operator(instance: Instance, login: str, *, actor: str) -> OperatorInfo:
    """Delete the account (its sessions end at their next request); operator.removed."""
    with instance.db.transaction() as session:
        row = session.scalar(select(OperatorAccount).where(OperatorAccount.login == login))
        if row is None:
            raise NotFoundError(f"no operator named {login!r} ('mailpki operator list')")
        info = _info(row)
        session.delete(row)
        instance.audit.append(
            session, "operator.removed", actor=actor, data={"login": login, "role": info.role}
        )
    return info


def change_password(instance: Instance, login: str, password: str, *, actor: str) -> None:
    """A new password (the TOTP secret stays); operator.password_changed."""
    with instance.db.session() as session:
        if session.scalar(select(OperatorAccount.id).where(OperatorAccount.login == login)) is None:
            raise NotFoundError(f"no operator named {login!r} ('mailpki operator list')")
    password_hash = operator_hasher().hash(_checked_password(password, login))
    with instance.db.transaction() as session:
        row = session.scalar(select(OperatorAccount).where(OperatorAccount.login == login))
        if row is None:  # removed meanwhile
            raise NotFoundError(f"no operator named {login!r} ('mailpki operator list')")
        row.password_hash = password_hash
        row.password_changed_at = datetime.now(UTC)
        instance.audit.append(
            session, "operator.password_changed", actor=actor, data={"login": login}
        )


def session_identity(operator: OperatorIdentity) -> dict[str, Any]:
    """What the web session keeps for a logged-on local operator (the console's contract)."""
    return {
        "login": operator.login,
        "source": OPERATOR_SOURCE,
        "display_name": operator.login,
        "operator_roles": [operator.role],
        "logged_on_at": datetime.now(UTC).isoformat(),
    }


@dataclass(frozen=True)
class OperatorView:
    """A logged-on operator as the pages' header names them."""

    login: str
    role: str


def operator_view(identity: Mapping[str, Any]) -> OperatorView:
    roles = identity.get("operator_roles") or [""]
    return OperatorView(str(identity["login"]), str(roles[0]))


def is_operator_identity(identity: Mapping[str, Any] | None) -> bool:
    """A session identity of a local operator (not a person: no mailbox, no enrollment)."""
    return identity is not None and identity.get("source") == OPERATOR_SOURCE


def operator_still_valid(instance: Instance, identity: Mapping[str, Any] | None) -> bool:
    """False for the session of a local operator whose account was removed, whose role is
    not the session's, or whose password changed after that logon (the session ends);
    True for any other identity."""
    if not is_operator_identity(identity):
        return True
    assert identity is not None
    with instance.db.session() as session:
        row = session.execute(
            select(OperatorAccount.role, OperatorAccount.password_changed_at).where(
                OperatorAccount.login == str(identity.get("login"))
            )
        ).first()
    if row is None or [row.role] != identity.get("operator_roles"):
        return False
    try:
        logged_on_at = datetime.fromisoformat(str(identity.get("logged_on_at")))
    except ValueError:
        return False
    return bool(row.password_changed_at <= logged_on_at)


def log_on(
    instance: Instance, login: str, password: str, code: str, *, source: str
) -> dict[str, Any]:
    """Check login, password and TOTP code; the session identity. Audited either way
    (operator.logged_on / operator.logon_failed), never with the password or the code."""
    try:
        operator = instance.operator_logon.authenticate(login, password, code, source=source)
    except AuthenticationError as exc:
        with instance.db.transaction() as session:
            instance.audit.append(
                session, "operator.logon_failed", actor=f"portal:{source}",
                data={"login": login[:64], "reason": str(exc)[:300]},
            )  # fmt: skip
        raise
    with instance.db.transaction() as session:
        instance.audit.append(
            session, "operator.logged_on", actor=f"operator:{operator.login}",
            data={"login": operator.login, "role": operator.role, "source": source},
        )  # fmt: skip
    return session_identity(operator)
