"""POST /admin/logon: a local operator logs on to the console with login, password and
TOTP code (instances without an LDAP directory; see mailpki.instance.operators).

Every wrong part gets one message (no oracle); the client address is rate-limited on
top of the per-login lockout; each attempt is audited. On success the session is
rotated and holds the operator identity ({"login", "source": "operator",
"display_name", "operator_roles"}), which the console reads and the enrollment pages
refuse.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailpki.errors import AuthenticationError, MailPKIError
from mailpki.instance.operators import log_on
from mailpki.instance.portal import Portal
from mailpki.web.certdir import RateLimiter
from mailpki.web.portal.sessions import PortalSession, SessionCookies

__all__ = ["OPERATORS_DO_NOT_ENROLL", "operator_logon_route"]

log = logging.getLogger(__name__)

MAX_FIELD = 1024
OPERATORS_DO_NOT_ENROLL = (
    "An operator account opens the console, not the enrollment pages: it has no mailbox "
    "to make a certificate for. Log out and log on with your own directory account."
)
CheckedPost = Callable[[Request], Awaitable["tuple[PortalSession, FormData] | Response"]]
LogonPage = Callable[..., Response]


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value[: MAX_FIELD + 1] if isinstance(value, str) else ""


def operator_logon_route(
    portal: Portal,
    cookies: SessionCookies,
    *,
    checked_post: CheckedPost,
    logon_page: LogonPage,
    limiter: RateLimiter,
) -> Route:
    async def operator_logon(request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        login, password, code = (_text(form, n) for n in ("login", "secret", "code"))
        source = request.client.host if request.client else "unknown"
        again: dict[str, Any] = {"next_page": "/admin", "method": "operator"}
        if limiter.take(source) > 0:
            message = "Too many attempts from your address: wait a minute and try again."
            return logon_page(session, message=message, status=429, **again)
        try:
            identity = await run_in_threadpool(
                log_on, portal.instance, login, password, code, source=source
            )
        except AuthenticationError as exc:
            return logon_page(session, message=f"{exc}.", status=401, **again)
        except MailPKIError as exc:
            log.warning("operator logon unavailable: %s", exc)
            message = "Logon is not possible just now; tell the administrator."
            return logon_page(session, message=message, status=503, **again)
        session = await run_in_threadpool(cookies.log_on, session, identity)
        return cookies.attach(session, RedirectResponse("/admin", status_code=303))

    return Route("/admin/logon", operator_logon, methods=["POST"])
