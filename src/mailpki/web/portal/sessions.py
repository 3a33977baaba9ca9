"""Portal sessions over HTTP: the cookies, CSRF tokens and security headers.

Before logon a visitor gets only a random nonce cookie and no server state (a page
view must not write to the database); the logon form's CSRF token is an HMAC of that
nonce under a key derived from the instance secret. Logon replaces the nonce with a
session cookie: a random token whose data is server side, with its own CSRF token.
Both cookies are HttpOnly and SameSite=Lax, with Secure and the `__Host-` prefix behind
https. Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailpki.enrollment.portal_store import SessionStore, check_handle
from mailpki.web.certdir import PAGE_CSP

PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


@dataclass
class PortalSession:
    token: str | None  # a logged-on session's token (None before logon)
    data: dict[str, Any] = field(default_factory=dict)
    changed: bool = False
    nonce: str | None = None  # the pre-logon cookie's value
    drop_nonce: bool = False

    @property
    def csrf(self) -> str:
        return str(self.data.get("csrf", ""))

    @property
    def identity(self) -> dict[str, Any] | None:
        value = self.data.get("identity")
        return value if isinstance(value, dict) else None


class SessionCookies:
    def __init__(self, store: SessionStore, *, secure: bool, csrf_key: bytes) -> None:
        self.store = store
        self.secure = secure
        self._csrf_key = csrf_key
        # Behind https the __Host- prefix pins a cookie to this host and path /.
        self.name = "__Host-mailpki" if secure else "mailpki_session"
        self.pre_name = "__Host-mailpki-pre" if secure else "mailpki_pre"

    def _pre_csrf(self, nonce: str) -> str:
        return hmac.new(self._csrf_key, nonce.encode("ascii"), hashlib.sha256).hexdigest()

    def load(self, request: Request) -> PortalSession:
        token = request.cookies.get(self.name)
        data = self.store.load(token) if token else None
        if data is not None:
            return PortalSession(token=token, data=data)
        nonce = check_handle(request.cookies.get(self.pre_name))
        if nonce is None:
            return PortalSession(token=None)
        return PortalSession(token=None, data={"csrf": self._pre_csrf(nonce)}, nonce=nonce)

    def ensure(self, session: PortalSession) -> PortalSession:
        """A visitor with a CSRF token for the logon form (a nonce cookie, no server state)."""
        if session.token is None and session.nonce is None:
            nonce = secrets.token_urlsafe(32)
            return PortalSession(
                token=None, data={"csrf": self._pre_csrf(nonce)}, changed=True, nonce=nonce
            )
        return session

    def log_on(self, session: PortalSession, identity: dict[str, Any]) -> PortalSession:
        """A new server-side session with its own token and CSRF token; the pre-logon
        nonce (or an older session's token) stops working (defeats session fixation)."""
        data = {"csrf": secrets.token_urlsafe(32), "identity": identity}
        return PortalSession(
            token=self.store.rotate(session.token, data), data=data, changed=True, drop_nonce=True
        )

    def save(self, session: PortalSession) -> None:
        if session.token is not None:
            self.store.save(session.token, session.data)

    def end(self, session: PortalSession, response: Response) -> None:
        if session.token is not None:
            self.store.delete(session.token)
        for name in (self.name, self.pre_name):
            response.delete_cookie(
                name, path="/", secure=self.secure, httponly=True, samesite="lax"
            )

    def attach(self, session: PortalSession, response: Response) -> Response:
        if session.changed:
            if session.token is not None:
                name, value = self.name, session.token
            else:
                name, value = self.pre_name, session.nonce or ""
            if value:
                response.set_cookie(
                    name, value, path="/", secure=self.secure, httponly=True, samesite="lax"
                )
        if session.drop_nonce:
            response.delete_cookie(
                self.pre_name, path="/", secure=self.secure, httponly=True, samesite="lax"
            )
        for key, value in PAGE_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @staticmethod
    def csrf_ok(session: PortalSession, submitted: object) -> bool:
        expected = session.csrf
        return (
            bool(expected)
            and isinstance(submitted, str)
            and secrets.compare_digest(expected.encode(), submitted.encode())
        )
