"""Bearer tokens of the JSON API: created by the CLI (shown once), stored as a SHA-256,
scoped by an operator role, with an optional expiry; revoking one is immediate."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from mailpki.errors import AuthenticationError, InputError, NotFoundError
from mailpki.instance.instance import Instance
from mailpki.policy.operator_roles import OperatorRole, parse_operator_role
from mailpki.store.models import ApiToken

TOKEN_PREFIX = "mpk_"  # noqa: S105 - a prefix that marks our tokens, not a secret
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TOKEN = re.compile(r"mpk_[A-Za-z0-9_-]{43}")
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never the token itself."""

    name: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= datetime.now(UTC):
            return "expired"
        return "active"


@dataclass(frozen=True)
class ApiPrincipal:
    """Who called the API: the token's name (the audit actor) and its role."""

    name: str
    role: OperatorRole

    @property
    def actor(self) -> str:
        return f"api:{self.name}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        row.name,
        row.role,
        row.created_at,
        row.created_by,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
    )


def create_token(
    instance: Instance, name: str, role: str, *, expires_days: int | None, actor: str
) -> tuple[TokenInfo, str]:
    """A new token (returned once, stored only as its hash); audited."""
    if not _NAME.fullmatch(name):
        raise InputError(
            "a token name is 1-64 lower-case letters, digits, '.', '_' or '-' (e.g. hr-sync)"
        )
    checked = parse_operator_role(role)
    if expires_days is not None and not 1 <= expires_days <= 3650:
        raise InputError("--expires must be between 1 and 3650 days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    row = ApiToken(
        name=name,
        role=checked,
        token_sha256=_digest(token),
        created_at=now,
        created_by=actor,
        expires_at=now + timedelta(days=expires_days) if expires_days else None,
    )
    with instance.db.transaction() as session:
        if session.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
            raise InputError(f"an API token named {name!r} exists; revoke it or pick another name")
        session.add(row)
        instance.audit.append(
            session,
            "api.token_created",
            actor=actor,
            data={"name": name, "role": checked, "expires_at": _iso(row.expires_at)},
        )
    return _info(row), token


def list_tokens(instance: Instance) -> list[TokenInfo]:
    with instance.db.session() as session:
        rows = session.scalars(select(ApiToken).order_by(ApiToken.name)).all()
    return [_info(row) for row in rows]


def revoke_token(instance: Instance, name: str, *, actor: str) -> TokenInfo:
    with instance.db.transaction() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.name == name))
        if row is None:
            raise NotFoundError(f"no API token named {name!r} ('mailpki api-token list')")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            instance.audit.append(session, "api.token_revoked", actor=actor, data={"name": name})
        return _info(row)


def authenticate_token(instance: Instance, token: str) -> ApiPrincipal:
    """The principal of a presented token; AuthenticationError (one message for every
    reason a stranger could probe) when it is unknown, revoked or expired."""
    refused = AuthenticationError("the API token is not valid")
    if not _TOKEN.fullmatch(token):
        raise refused
    digest = _digest(token)
    now = datetime.now(UTC)
    with instance.db.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
        if row is None or not secrets.compare_digest(row.token_sha256, digest):
            raise refused
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
            raise refused
        principal = ApiPrincipal(row.name, parse_operator_role(row.role))
        stale = row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY
    if stale:  # at most one write a minute per token, not one per request
        with instance.db.transaction() as session:
            touched = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
            if touched is not None:
                touched.last_used_at = now
    return principal


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
