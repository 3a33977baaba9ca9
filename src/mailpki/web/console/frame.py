"""What every console page shares: the session, the console user, the frame, refusals
and CSRF-checked forms."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailpki.instance.console_access import ConsoleUser, console_user
from mailpki.instance.portal import Portal
from mailpki.policy.operator_roles import Permission
from mailpki.web.access_log import note
from mailpki.web.portal.sessions import PortalSession, SessionCookies
from mailpki.web.portal.theme import Theme

MAX_FORM_BYTES = 16 * 1024
MAX_UPLOAD_BYTES = 4 * 1024 * 1024 + 64 * 1024
MAX_FIELD = 2048
NOT_FOR_YOU = (
    "The operator console is for certificate officers, operators and auditors; "
    "your account has none of these roles."
)
STALE_FORM = (
    "This form has expired or did not come from this site. Go back, reload the page and try again."
)

# (path, label, permission needed; None: every console user)
NAV: tuple[tuple[str, str, Permission | None], ...] = (
    ("/admin", "Dashboard", None),
    ("/admin/people", "People", Permission.READ_PEOPLE),
    ("/admin/invitations", "Invite", Permission.INVITE),
    ("/admin/requests", "Requests", Permission.READ_REQUESTS),
    ("/admin/recovery", "Recovery", Permission.READ_RECOVERY_REPORT),
    ("/admin/audit", "Audit log", Permission.READ_AUDIT),
    ("/admin/settings", "Settings", Permission.READ_AUDIT),
)


def _login_of(identity: dict[str, Any] | None) -> str:
    """Whom a session belongs to, for the Log out button ("" before logon)."""
    if not identity:
        return ""
    entry = identity.get("entry")
    if isinstance(entry, dict) and entry.get("login"):
        return str(entry["login"])
    return str(identity.get("login") or "")


def field(form: FormData, name: str, *, limit: int = MAX_FIELD) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value[:limit]


@dataclass
class Visit:
    """One request's session and console user (None: anonymous or no role)."""

    session: PortalSession
    user: ConsoleUser | None


@dataclass
class ConsoleContext:
    """What the console pages need from the server: the portal (instance, sessions),
    the theme, the session cookies, and the logon page for anonymous visitors (with
    Kerberos single sign-on when it is on)."""

    portal: Portal
    theme: Theme
    cookies: SessionCookies
    logon: Callable[[Request, PortalSession], Awaitable[Response]]
    # The session of a request (a removed local operator's session is ended by it).
    load: Callable[[Request], Awaitable[PortalSession]]

    @property
    def instance(self) -> Any:
        return self.portal.instance

    async def visit(self, request: Request) -> Visit:
        session = await self.load(request)
        user = console_user(session.identity, self.portal.instance.config)
        return Visit(session, user)

    def render(self, visit: Visit, name: str, *, status: int = 200, **context: Any) -> Response:
        user = visit.user
        nav = [
            (path, label)
            for path, label, needed in NAV
            if user is not None and (needed is None or user.may(needed))
        ]
        html = self.theme.render(
            name,
            org=self.portal.org,
            csrf=visit.session.csrf,
            user=None,
            console_user=user,
            console_nav=nav,
            session_login=_login_of(visit.session.identity),
            certdir_url="/certs",
            **context,
        )
        return self.cookies.attach(visit.session, HTMLResponse(html, status_code=status))

    def refuse(self, visit: Visit, message: str, *, status: int) -> Response:
        note(message)
        return self.render(
            visit, "console/refused.html", status=status, message=message, error_status=status
        )

    async def guard(
        self, request: Request, permission: Permission | None
    ) -> tuple[Visit, ConsoleUser] | Response:
        """The visit of a console user allowed `permission`, else the logon page
        (anonymous) or a 403 page (logged on without the role)."""
        visit = await self.visit(request)
        if visit.session.identity is None:
            return await self.logon(request, visit.session)
        if visit.user is None:
            return self.refuse(visit, NOT_FOR_YOU, status=403)
        if permission is not None and not visit.user.may(permission):
            return self.refuse(
                visit, f"Your console role does not allow this page ({permission}).", status=403
            )
        return visit, visit.user

    async def posted(
        self, request: Request, permission: Permission, *, upload: bool = False
    ) -> tuple[Visit, ConsoleUser, FormData] | Response:
        """A POST from a console user allowed `permission`, whose CSRF token matches."""
        visit = await self.visit(request)
        declared = request.headers.get("content-length", "")
        limit = MAX_UPLOAD_BYTES if upload else MAX_FORM_BYTES
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        wanted = "multipart/form-data" if upload else "application/x-www-form-urlencoded"
        if not declared.isdigit() or int(declared) > limit or ctype != wanted:
            return self.refuse(visit, "The form was too large or not a form.", status=400)
        form = await request.form(max_files=1 if upload else 0, max_fields=20)
        if not self.cookies.csrf_ok(visit.session, form.get("csrf")):
            return self.refuse(visit, STALE_FORM, status=403)
        if visit.session.identity is None or visit.user is None:
            return self.refuse(visit, NOT_FOR_YOU, status=403)
        if not visit.user.may(permission):
            return self.refuse(
                visit, f"Your console role does not allow this ({permission}).", status=403
            )
        return visit, visit.user, form

    async def flash(self, visit: Visit, message: str, location: str) -> Response:
        """Redirect to `location`, which shows `message` once."""
        visit.session.data["notice"] = message
        await run_in_threadpool(self.cookies.save, visit.session)
        return RedirectResponse(location, status_code=303)

    async def take_notice(self, visit: Visit) -> str | None:
        notice = visit.session.data.pop("notice", None)
        if notice is not None:
            await run_in_threadpool(self.cookies.save, visit.session)
        return str(notice) if notice is not None else None
