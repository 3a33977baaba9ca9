"""Stored OpenID Connect state: the configured providers, and logons under way.

A logon under way is keyed by a SHA-256 of its `state` (the state itself travels only
through the browser), holds the nonce and the PKCE verifier on the server, is bound to
the browser that started it (a digest of its pre-logon cookie), lasts LOGON_MINUTES,
and is taken exactly once: a replayed or forged callback finds nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select

from mailpki.auth.oidc import OidcProvider
from mailpki.errors import InputError, NotFoundError
from mailpki.store.db import Database
from mailpki.store.models import OidcLogon, OidcProviderConfig

__all__ = ["LOGON_MINUTES", "OidcProviders", "PendingLogon", "PendingLogons"]

LOGON_MINUTES = 10


def _digest(value: str) -> str:
    return hashlib.sha256(b"mailpki-oidc\x00" + value.encode("utf-8", "replace")).hexdigest()


class OidcProviders:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list(self) -> list[OidcProvider]:
        with self.db.session() as session:
            rows = session.scalars(select(OidcProviderConfig).order_by(OidcProviderConfig.name))
            return [
                OidcProvider(
                    name=r.name,
                    issuer=r.issuer,
                    client_id=r.client_id,
                    client_secret_file=r.client_secret_file,
                    claim_mail=r.claim_mail,
                    claim_groups=r.claim_groups,
                )
                for r in rows
            ]

    def get(self, name: str) -> OidcProvider:
        for provider in self.list():
            if provider.name == name:
                return provider
        raise NotFoundError(f"no OpenID provider named {name[:64]!r}")

    def add(self, provider: OidcProvider) -> None:
        provider.check()
        with self.db.transaction() as session:
            if session.get(OidcProviderConfig, provider.name) is not None:
                raise InputError(
                    f"an OpenID provider named {provider.name} exists; remove it first"
                )
            session.add(
                OidcProviderConfig(
                    name=provider.name,
                    issuer=provider.issuer,
                    client_id=provider.client_id,
                    client_secret_file=str(Path(provider.client_secret_file).resolve()),
                    claim_mail=provider.claim_mail,
                    claim_groups=provider.claim_groups,
                    created_at=datetime.now(UTC),
                )
            )

    def remove(self, name: str) -> None:
        with self.db.transaction() as session:
            row = session.get(OidcProviderConfig, name)
            if row is None:
                raise NotFoundError(f"no OpenID provider named {name[:64]!r}")
            session.delete(row)


@dataclass(frozen=True)
class PendingLogon:
    state: str
    provider: str
    nonce: str
    code_verifier: str
    next_page: str


class PendingLogons:
    def __init__(self, db: Database, *, lifetime: timedelta | None = None) -> None:
        self.db = db
        self.lifetime = lifetime or timedelta(minutes=LOGON_MINUTES)

    def begin(self, provider: str, *, browser: str, next_page: str) -> PendingLogon:
        """A new logon with fresh state, nonce and PKCE verifier (RFC 7636: 43-128 chars)."""
        pending = PendingLogon(
            state=secrets.token_urlsafe(32),
            provider=provider,
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(64),
            next_page=next_page,
        )
        now = datetime.now(UTC)
        with self.db.transaction() as session:
            session.execute(delete(OidcLogon).where(OidcLogon.expires_at <= now))
            session.add(
                OidcLogon(
                    state_sha256=_digest(pending.state),
                    provider=provider,
                    browser_sha256=_digest(browser),
                    nonce=pending.nonce,
                    code_verifier=pending.code_verifier,
                    next_page=next_page,
                    expires_at=now + self.lifetime,
                )
            )
        return pending

    def take(self, state: str, *, browser: str) -> PendingLogon | None:
        """The logon `state` belongs to, removed (once only), if it has not expired and
        this is the browser that began it; None otherwise."""
        if not state or len(state) > 128:
            return None
        with self.db.transaction() as session:
            row = session.get(OidcLogon, _digest(state))
            if row is None:
                return None
            session.delete(row)
            expired = row.expires_at <= datetime.now(UTC)
            other_browser = not secrets.compare_digest(row.browser_sha256, _digest(browser))
            if expired or other_browser:
                return None
            return PendingLogon(
                state=state,
                provider=row.provider,
                nonce=row.nonce,
                code_verifier=row.code_verifier,
                next_page=row.next_page,
            )
