"""Portal sessions over HTTP: the cookie, CSRF tokens and security headers.

The cookie holds only a random token (HttpOnly, SameSite=Lax, Secure and the
`__Host-` prefix behind https); the data is server side. Every form carries the
session's CSRF token, compared in constant time. Logon rotates the token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailpki.enrollment.portal_store import SessionStore

PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


@dataclass
class PortalSession:
    token: str | None
    data: dict[str, Any] = field(default_factory=dict)
    changed: bool = False

    @property
    def csrf(self) -> str:
        return str(self.data.get("csrf", ""))

    @property
    def identity(self) -> dict[str, Any] | None:
        value = self.data.get("identity")
        return value if isinstance(value, dict) else None


class SessionCookies:
    def __init__(self, store: SessionStore, *, secure: bool) -> None:
        self.store = store
        self.secure = secure
        # Behind https the __Host- prefix pins the cookie to this host and path /.
        self.name = "__Host-mailpki" if secure else "mailpki_session"

    def load(self, request: Request) -> PortalSession:
        token = request.cookies.get(self.name)
        data = self.store.load(token) if token else None
        if data is None:
            return PortalSession(token=None)
        return PortalSession(token=token, data=data)

    def ensure(self, session: PortalSession) -> PortalSession:
        """A session with a CSRF token (made for an anonymous visitor on the logon page)."""
        if session.token is None:
            data = {"csrf": secrets.token_urlsafe(32)}
            return PortalSession(token=self.store.create(data), data=data, changed=True)
        return session

    def log_on(self, session: PortalSession, identity: dict[str, Any]) -> PortalSession:
        """Rotate: the pre-logon token dies, the logged-on session gets a new one and a
        new CSRF token (defeats session fixation)."""
        data = {"csrf": secrets.token_urlsafe(32), "identity": identity}
        return PortalSession(token=self.store.rotate(session.token, data), data=data, changed=True)

    def save(self, session: PortalSession) -> None:
        if session.token is not None:
            self.store.save(session.token, session.data)

    def end(self, session: PortalSession, response: Response) -> None:
        if session.token is not None:
            self.store.delete(session.token)
        response.delete_cookie(
            self.name, path="/", secure=self.secure, httponly=True, samesite="lax"
        )

    def attach(self, session: PortalSession, response: Response) -> Response:
        if session.changed and session.token is not None:
            response.set_cookie(
                self.name,
                session.token,
                path="/",
                secure=self.secure,
                httponly=True,
                samesite="lax",
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
