"""Server-side state of the enrollment portal: sessions and one-time downloads.

Both live in the database, so any of several stateless nodes can serve a request.

- A session's cookie holds a random 32-byte token; the table keys it by SHA-256, so a
  copy of the database opens no session. Idle and absolute lifetimes both apply.
- A download (the PKCS#12) is encrypted with AES-256-GCM under a key derived from the
  session token, which is stored nowhere: the row is useless without the browser that
  made it, and `take` refuses another session outright. It works once and expires.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select, update

from mailpki.errors import InputError, NotFoundError
from mailpki.store.db import Database
from mailpki.store.models import PortalDownload, PortalSession

__all__ = ["DownloadStore", "SessionStore", "StoredDownload", "check_handle"]

TOKEN_BYTES = 32
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_SESSION_BYTES = 64 * 1024


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def check_handle(value: object) -> str | None:
    """The token if it has our shape (checked before any hashing or lookup), else None."""
    if isinstance(value, str) and _TOKEN_RE.fullmatch(value):
        return value
    return None


class SessionStore:
    """Portal sessions: opaque JSON data behind a random cookie token."""

    def __init__(self, db: Database, *, idle: timedelta, absolute: timedelta) -> None:
        self.db = db
        self.idle = idle
        self.absolute = absolute

    def create(self, data: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = datetime.now(UTC)
        with self.db.transaction() as session:
            session.add(
                PortalSession(
                    id_sha256=_digest(token),
                    data=self._encode(data),
                    created_at=now,
                    seen_at=now,
                    expires_at=now + self.absolute,
                )
            )
        return token

    def load(self, token: str | None) -> dict[str, Any] | None:
        """The session's data, or None if it is unknown, idle too long or past its life.
        A live session's idle clock restarts (at most once a minute: fewer writes)."""
        if check_handle(token) is None:
            return None
        assert token is not None
        digest = _digest(token)
        now = datetime.now(UTC)
        with self.db.session() as session:
            row = session.get(PortalSession, digest)
            if row is None:
                return None
            seen, expires, raw = row.seen_at, row.expires_at, row.data
        if expires <= now or seen + self.idle <= now:
            self.delete(token)
            return None
        if now - seen > timedelta(minutes=1):
            with self.db.transaction() as session:
                session.execute(
                    update(PortalSession)
                    .where(PortalSession.id_sha256 == digest)
                    .values(seen_at=now)
                )
        data: dict[str, Any] = json.loads(raw)
        return data

    def save(self, token: str, data: dict[str, Any]) -> None:
        with self.db.transaction() as session:
            session.execute(
                update(PortalSession)
                .where(PortalSession.id_sha256 == _digest(token))
                .values(data=self._encode(data), seen_at=datetime.now(UTC))
            )

    def claim(self, token: str, *, hold: timedelta = timedelta(minutes=2)) -> bool:
        """Mark the session busy (one enrollment at a time); False if it already is.
        A conditional UPDATE, so two requests on two nodes cannot both win; the hold
        ends by itself if a node dies mid-way."""
        now = datetime.now(UTC)
        with self.db.transaction() as session:
            result = session.execute(
                update(PortalSession)
                .where(
                    PortalSession.id_sha256 == _digest(token),
                    (PortalSession.busy_until.is_(None)) | (PortalSession.busy_until <= now),
                )
                .values(busy_until=now + hold)
            )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def release(self, token: str) -> None:
        with self.db.transaction() as session:
            session.execute(
                update(PortalSession)
                .where(PortalSession.id_sha256 == _digest(token))
                .values(busy_until=None)
            )

    def rotate(self, token: str | None, data: dict[str, Any]) -> str:
        """A new token for the session's new data (at logon: defeats session fixation);
        the old token stops working at once."""
        if token is not None and check_handle(token) is not None:
            self.delete(token)
        return self.create(data)

    def delete(self, token: str) -> None:
        with self.db.transaction() as session:
            session.execute(delete(PortalSession).where(PortalSession.id_sha256 == _digest(token)))

    def purge_expired(self) -> int:
        now = datetime.now(UTC)
        with self.db.transaction() as session:
            result = session.execute(
                delete(PortalSession).where(
                    (PortalSession.expires_at <= now) | (PortalSession.seen_at <= now - self.idle)
                )
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    def _encode(data: dict[str, Any]) -> str:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        if len(text) > MAX_SESSION_BYTES:
            raise InputError("the session holds too much data")
        return text


@dataclass(frozen=True)
class StoredDownload:
    serial: str
    email: str
    filename: str
    data: bytes


class DownloadStore:
    """One-time, expiring downloads bound to (and encrypted under) one session."""

    def __init__(self, db: Database, *, lifetime: timedelta) -> None:
        self.db = db
        self.lifetime = lifetime

    @staticmethod
    def _cipher(session_token: str, handle: str) -> AESGCM:
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"mailpki portal download " + handle.encode("ascii"),
        ).derive(session_token.encode("ascii"))
        return AESGCM(key)

    def put(
        self, session_token: str, *, serial: str, email: str, filename: str, data: bytes
    ) -> str:
        handle = secrets.token_urlsafe(TOKEN_BYTES)
        nonce = os.urandom(12)
        digest = _digest(handle)
        blob = nonce + self._cipher(session_token, handle).encrypt(nonce, data, digest.encode())
        now = datetime.now(UTC)
        with self.db.transaction() as session:
            session.add(
                PortalDownload(
                    id_sha256=digest,
                    session_sha256=_digest(session_token),
                    serial=serial,
                    email=email,
                    filename=filename,
                    blob=blob,
                    created_at=now,
                    expires_at=now + self.lifetime,
                )
            )
        return handle

    def take(self, handle: str, session_token: str) -> StoredDownload:
        """The file, once: a second take, another session's take and a take after expiry
        all fail with the same NotFoundError (nothing tells them apart to a prober)."""
        missing = NotFoundError("this download link is not valid, was used or has expired")
        if check_handle(handle) is None or check_handle(session_token) is None:
            raise missing
        digest = _digest(handle)
        now = datetime.now(UTC)
        with self.db.transaction() as session:
            row = session.get(PortalDownload, digest)
            if (
                row is None
                or row.fetched_at is not None
                or row.expires_at <= now
                or not secrets.compare_digest(row.session_sha256, _digest(session_token))
            ):
                raise missing
            # Conditional update: of two racing takes exactly one wins.
            result = session.execute(
                update(PortalDownload)
                .where(PortalDownload.id_sha256 == digest, PortalDownload.fetched_at.is_(None))
                .values(fetched_at=now, blob=b"")
                .execution_options(synchronize_session=False)
            )
            if int(result.rowcount) != 1:  # type: ignore[attr-defined]
                raise missing
            blob, serial, email, filename = row.blob, row.serial, row.email, row.filename
        try:
            data = self._cipher(session_token, handle).decrypt(
                blob[:12], blob[12:], digest.encode()
            )
        except InvalidTag:
            raise missing from None
        return StoredDownload(serial=serial, email=email, filename=filename, data=data)

    def expired_unfetched(self) -> list[str]:
        """Serials whose download expired unused (their certificates are to be withdrawn)."""
        now = datetime.now(UTC)
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(PortalDownload.serial).where(
                        PortalDownload.fetched_at.is_(None), PortalDownload.expires_at <= now
                    )
                )
            )

    def forget(self, serials: list[str]) -> None:
        """Drop expired rows once their certificates are dealt with; fetched rows are kept
        (blob emptied) for a day as a record, then dropped too."""
        now = datetime.now(UTC)
        with self.db.transaction() as session:
            if serials:
                session.execute(
                    delete(PortalDownload).where(
                        PortalDownload.serial.in_(serials), PortalDownload.fetched_at.is_(None)
                    )
                )
            session.execute(
                delete(PortalDownload).where(
                    PortalDownload.fetched_at.is_not(None),
                    PortalDownload.fetched_at <= now - timedelta(days=1),
                )
            )
