"""The enrollment portal's pages.

    GET  /                    logon (directory password or HR PIN; Kerberos: Negotiate)
    GET  /enroll/{token}      logon from an invitation link (the link is used at logon)
    POST /logon               check credentials, rotate the session
    GET  /oidc/{name}         log on with an OpenID provider (to its authorization page)
    GET  /oidc/callback       back from the provider: code -> ID token -> session
    GET  /form, POST /form    the pre-filled form; accept -> issue, escrow, package
    GET  /fetch/{handle}      the download page, marking that file as downloading; it starts it
    POST /renew               renew a certificate that expires within the renewal window
    GET  /download/{handle}   the PKCS#12, once, from the session that made it
    GET  /download/{handle}/mobileconfig   the same download as an Apple profile (iPhone)
    GET  /waiting             a request queued for an officer
    POST /logout
    GET  /admin/...           the operator console (web/console/)
    GET  /tutorial            using the certificate (public)
    GET  /trust               trusting the root, for outside correspondents (public)
    GET  /trust/{name}        the root as .pem, .cer, .p7c, .mobileconfig; fingerprints.txt
    GET  /static/{path}       CSS, logo, pictures (theme first)

No page runs a script: the CSP forbids all of them, so an injected name stays text.
Blocking work (database, directory, key generation) runs in the thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from mailpki.enrollment.invitations import check_token
from mailpki.enrollment.portal_store import check_handle
from mailpki.errors import AuthenticationError, InputError, MailPKIError, NotFoundError
from mailpki.instance import portal_renewal
from mailpki.instance.operators import is_operator_identity, operator_still_valid, operator_view
from mailpki.instance.portal import InvitedPerson, Portal, PortalOutcome
from mailpki.instance.trust_kit import KIT_FILES
from mailpki.web.access_log import note
from mailpki.web.certdir import RateLimiter
from mailpki.web.console import ConsoleContext, console_routes
from mailpki.web.portal.negotiate import (
    OIDC_UNAVAILABLE,
    SSO_UNAVAILABLE,
    challenge,
    oidc_refused,
    sso_refused,
    with_mutual_token,
)
from mailpki.web.portal.operator_logon import OPERATORS_DO_NOT_ENROLL, operator_logon_route
from mailpki.web.portal.sessions import PortalSession, SessionCookies
from mailpki.web.portal.theme import Theme

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 16 * 1024
MAX_FIELD = 1024
MOBILECONFIG_TYPE = "application/x-apple-aspen-config"
LOGON_RATE_PER_MINUTE = 20  # per client address, on top of the per-login lockout

Handler = Callable[[Request], Awaitable[Response]]


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    if len(value) > MAX_FIELD:
        raise InputError(f"the field '{name}' is too long")
    return value


def _sentence(message: str) -> str:
    """A message as the page shows it: a sentence, starting with a capital letter."""
    return message[:1].upper() + message[1:]


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _attachment(data: bytes, media_type: str, filename: str) -> Response:
    """A file to save, never shown inline nor cached by the way (filenames are ours)."""
    return Response(
        data,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def portal_routes(portal: Portal, theme: Theme) -> list[BaseRoute]:
    cookies = SessionCookies(
        portal.sessions, secure=portal.secure_cookies, csrf_key=portal.csrf_key
    )
    logon_limiter = RateLimiter(LOGON_RATE_PER_MINUTE, LOGON_RATE_PER_MINUTE)

    def viewer(session: PortalSession) -> object:
        """Who the page's header names: a person (their form view) or a local operator."""
        if is_operator_identity(session.identity):
            return operator_view(session.identity or {})
        return portal.form(session.identity) if session.identity else None

    def page(session: PortalSession, name: str, *, status: int = 200, **context: Any) -> Response:
        if context.get("message"):
            context["message"] = _sentence(str(context["message"]))
            if status >= 400:
                note(context["message"])  # the reason, on the request's access line
        html = theme.render(
            name,
            org=portal.org,
            csrf=session.csrf,
            user=viewer(session),
            certdir_url="/certs",
            **context,
        )
        return cookies.attach(session, HTMLResponse(html, status_code=status))

    def error(session: PortalSession, message: str, *, status: int) -> Response:
        return page(session, "error.html", status=status, message=message, error_status=status)

    def not_a_person(session: PortalSession) -> Response | None:
        """The refusal of an enrollment page to a local operator (no mailbox), else None."""
        if is_operator_identity(session.identity):
            return error(session, OPERATORS_DO_NOT_ENROLL, status=403)
        return None

    def load_checked(request: Request) -> PortalSession:
        session = cookies.load(request)
        if session.token and not operator_still_valid(portal.instance, session.identity):
            portal.sessions.delete(session.token)  # the account was removed or its password changed
            return PortalSession(token=None)
        return session

    async def load(request: Request) -> PortalSession:
        return await run_in_threadpool(load_checked, request)

    async def read_form(request: Request) -> FormData | None:
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > MAX_FORM_BYTES:
            return None
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return None
        return await request.form(max_files=0, max_fields=20)

    async def checked_post(request: Request) -> tuple[PortalSession, FormData] | Response:
        """The session and form of a POST whose CSRF token matches, else the refusal."""
        session = await load(request)
        form = await read_form(request)
        if form is None:
            return error(session, "The form was too large or not a form.", status=400)
        if not cookies.csrf_ok(session, form.get("csrf")):
            return error(
                session,
                "This form has expired or did not come from this site. "
                "Go back, reload the page and try again.",
                status=403,
            )
        return session, form

    def logon_page(
        session: PortalSession,
        *,
        invitation: str | None = None,
        invited: InvitedPerson | None = None,
        message: str | None = None,
        method: str = "directory",
        login: str = "",
        status: int = 200,
        next_page: str = "",
    ) -> Response:
        if next_page == "/admin":
            return page(session, "officer-logon.html", status=status, message=message,
                        login=login if method == "directory" else "", method=method,
                        oidc_providers=portal.oidc_names())  # fmt: skip
        return page(
            session,
            "logon.html",
            status=status,
            methods=portal.methods,
            next_page=next_page,
            invitation=invitation,
            invited=invited,
            message=message,
            method=method,
            login=login,
            oidc_providers=portal.oidc_names(),
        )

    # -- Kerberos single sign-on (see web/portal/negotiate.py) ----------------------------

    async def single_sign_on(
        request: Request, session: PortalSession, next_page: str
    ) -> Response | None:
        """Log on with the Negotiate token the browser sent, if it sent one."""
        header = request.headers.get("authorization")
        if not portal.kerberos or header is None:
            return None
        source = _client(request)
        if logon_limiter.take(source) > 0:
            return logon_page(
                session,
                message="Too many attempts from your address: wait a minute and try again.",
                status=429,
                next_page=next_page,
            )
        try:
            identity, reply = await run_in_threadpool(portal.negotiate, header, source=source)
        except AuthenticationError as exc:
            return logon_page(session, message=sso_refused(exc), status=403, next_page=next_page)
        except MailPKIError as exc:
            log.warning("Kerberos logon unavailable: %s", exc)
            return logon_page(session, message=SSO_UNAVAILABLE, status=503, next_page=next_page)
        session = await run_in_threadpool(cookies.log_on, session, identity)
        response = RedirectResponse(next_page or "/form", status_code=303)
        return cookies.attach(session, with_mutual_token(response, reply))

    def logon_or_challenge(session: PortalSession, *, next_page: str = "") -> Response:
        """The logon form; with Kerberos on, as a 401 Negotiate challenge (a browser with
        a ticket answers it, one without shows the form)."""
        response = logon_page(session, next_page=next_page)
        return challenge(response) if portal.kerberos else response

    # -- OpenID Connect (see web/portal/negotiate.py for the messages) --------------------

    async def oidc_start(request: Request) -> Response:
        session = await load(request)
        if session.identity is not None:
            return RedirectResponse("/form", status_code=303)
        session = cookies.ensure(session)
        next_page = "/admin" if request.query_params.get("next") == "/admin" else ""
        if logon_limiter.take(_client(request)) > 0:
            message = "Too many attempts from your address: wait a minute and try again."
            return logon_page(session, message=message, status=429, next_page=next_page)
        try:
            url = await run_in_threadpool(
                portal.oidc_begin,
                request.path_params["name"],
                browser=session.nonce or "",
                next_page=next_page,
            )
        except (InputError, NotFoundError):
            return error(session, "There is no such way of logging on here.", status=404)
        except MailPKIError as exc:
            log.warning("OpenID logon unavailable: %s", exc)
            return logon_page(session, message=OIDC_UNAVAILABLE, status=503, next_page=next_page)
        return cookies.attach(session, RedirectResponse(url, status_code=303))

    async def oidc_callback(request: Request) -> Response:
        session = await load(request)
        params = request.query_params
        if logon_limiter.take(_client(request)) > 0:
            message = "Too many attempts from your address: wait a minute and try again."
            return logon_page(cookies.ensure(session), message=message, status=429)
        try:
            identity, next_page = await run_in_threadpool(
                portal.oidc_finish,
                state=params.get("state", "")[:256],
                code=params.get("code", "")[:4096],
                error=params.get("error", "")[:100],
                issuer=params.get("iss", "")[:400],
                browser=session.nonce or "",
                source=_client(request),
            )
        except AuthenticationError as exc:
            return logon_page(cookies.ensure(session), message=oidc_refused(exc), status=403)
        except MailPKIError as exc:
            log.warning("OpenID logon unavailable: %s", exc)
            return logon_page(cookies.ensure(session), message=OIDC_UNAVAILABLE, status=503)
        session = await run_in_threadpool(cookies.log_on, session, identity)
        return cookies.attach(session, RedirectResponse(next_page or "/form", status_code=303))

    # -- pages ---------------------------------------------------------------------------

    async def home(request: Request) -> Response:
        session = await load(request)
        if session.identity is not None:
            where = "/admin" if is_operator_identity(session.identity) else "/form"
            return RedirectResponse(where, status_code=303)
        session = cookies.ensure(session)
        return await single_sign_on(request, session, "") or logon_or_challenge(session)

    async def invitation(request: Request) -> Response:
        session = await load(request)
        token = request.path_params["token"]
        try:
            invited = await run_in_threadpool(portal.invitation_for, check_token(token))
        except InputError as exc:
            return error(session, f"{str(exc)[:1].upper()}{str(exc)[1:]}.", status=410)
        session = cookies.ensure(session)
        return logon_page(session, invitation=token, invited=invited)

    async def logon(request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        try:
            method = _field(form, "method") or "directory"
            login = _field(form, "login")
            secret = _field(form, "secret")
            invitation = _field(form, "invitation") or None
            next_page = "/admin" if _field(form, "next") == "/admin" else ""  # no open redirect
        except InputError as exc:
            return error(session, f"{exc}.", status=400)
        source = _client(request)
        if logon_limiter.take(source) > 0:
            return logon_page(
                session,
                invitation=invitation,
                message="Too many attempts from your address: wait a minute and try again.",
                method=method,
                login=login,
                status=429,
                next_page=next_page,
            )
        try:
            identity = await run_in_threadpool(
                portal.logon,
                method=method,
                login=login,
                secret=secret,
                source=source,
                invitation=invitation,
            )
        except AuthenticationError as exc:
            return logon_page(
                session, invitation=invitation, message=f"{exc}.", method=method,
                login=login, status=401, next_page=next_page,
            )  # fmt: skip
        except InputError as exc:
            return logon_page(
                session, invitation=None, message=f"{exc}.", method=method, login=login,
                status=400,
            )  # fmt: skip
        session = await run_in_threadpool(cookies.log_on, session, identity)
        return cookies.attach(session, RedirectResponse(next_page or "/form", status_code=303))

    async def show_form(request: Request) -> Response:
        session = await load(request)
        if session.identity is None:
            return RedirectResponse("/", status_code=303)
        if refused := not_a_person(session):
            return refused
        if session.data.get("downloads"):
            return RedirectResponse("/done", status_code=303)
        if session.data.get("queued"):
            return RedirectResponse("/waiting", status_code=303)
        renewal = await run_in_threadpool(portal_renewal.offer, portal, session.identity)
        return page(session, "form.html", values={}, message=None, renewal=renewal)

    async def renew(request: Request) -> Response:
        """Renew, as an enrollment: one at a time per session; the downloads page."""
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        if session.identity is None or session.token is None:
            return RedirectResponse("/", status_code=303)
        if refused := not_a_person(session):
            return refused
        token = session.token
        try:
            choose = _field(form, "password_choice") == "choose"
            password, confirm = _field(form, "password"), _field(form, "confirm")
            legacy = _field(form, "legacy") == "on"
        except InputError as exc:
            return error(session, f"{exc}.", status=400)
        if not await run_in_threadpool(portal.sessions.claim, token):
            return error(session, "Your certificate is already being renewed.", status=409)
        try:
            outcome: PortalOutcome = await run_in_threadpool(
                lambda: portal_renewal.renew(
                    portal, token, session.identity or {},
                    password=password if choose else None,
                    confirm=confirm if choose else None, legacy=legacy,
                )
            )  # fmt: skip
        except InputError as exc:
            return error(session, f"{exc}.", status=400)
        except MailPKIError as exc:
            log.warning("portal renewal failed: %s", exc)
            return error(
                session,
                "Your certificate could not be renewed just now; nothing was changed. "
                "Please try again in a few minutes.",
                status=503,
            )
        finally:
            await run_in_threadpool(portal.sessions.release, token)
        session.data["downloads"] = [
            {"handle": d.handle, "filename": d.filename, "what": d.what} for d in outcome.downloads
        ]
        session.data["serial"] = outcome.serial
        await run_in_threadpool(cookies.save, session)
        response = page(
            session,
            "done.html",
            downloads=session.data["downloads"],
            password=outcome.generated_password,
            mail=outcome.email,
            fetching=None,
        )
        response.background = BackgroundTask(portal.after_enrollment)
        return response

    async def enroll_checked(
        session: PortalSession,
        values: dict[str, Any],
        accepted: bool,
        password: str,
        confirm: str,
    ) -> PortalOutcome | Response:
        """The enrollment, or the form again with what to change (nothing issued)."""
        assert session.token is not None and session.identity is not None
        try:
            if not accepted:
                raise InputError("please read and accept the terms to go on")
            if values["mode"] not in ("single", "dual"):
                raise InputError("choose single-key or dual-key")
            if values["password_choice"] not in ("generate", "choose"):
                raise InputError("choose how the file is protected")
            choose = values["password_choice"] == "choose"  # noqa: S105 (a form choice)
            outcome: PortalOutcome = await run_in_threadpool(
                portal.enroll,
                session.token,
                session.identity,
                dual_key=values["mode"] == "dual",
                password=password if choose else None,
                confirm=confirm if choose else None,
                legacy=bool(values["legacy"]),
            )
        except InputError as exc:
            return page(session, "form.html", status=400, values=values, message=f"{exc}.")
        except MailPKIError as exc:
            log.warning("portal enrollment failed: %s", exc)
            return page(
                session,
                "form.html",
                status=503,
                values=values,
                message="Your certificate could not be made just now; nothing was issued. "
                "Please try again in a few minutes.",
            )
        return outcome

    async def submit_form(request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        if session.identity is None or session.token is None:
            return RedirectResponse("/", status_code=303)
        if refused := not_a_person(session):
            return refused
        try:
            values = {
                "mode": _field(form, "mode") or "single",
                "password_choice": _field(form, "password_choice") or "generate",
                "legacy": _field(form, "legacy") == "on",
            }
            accepted = _field(form, "accept") == "on"
            password, confirm = _field(form, "password"), _field(form, "confirm")
        except InputError as exc:
            return page(session, "form.html", status=400, values={}, message=f"{exc}.")
        token = session.token
        # One enrollment per session at a time, on any node: a double click or a second
        # tab waits for the first instead of issuing a second certificate.
        if not await run_in_threadpool(portal.sessions.claim, token):
            return error(
                session,
                "Your certificate is already being made (in another tab or by a second "
                "click). Wait a moment, then open the download page.",
                status=409,
            )
        try:
            fresh = await load(request)  # what the other request may have finished
            if fresh.data.get("downloads"):
                return RedirectResponse("/done", status_code=303)
            outcome = await enroll_checked(session, values, accepted, password, confirm)
        finally:
            await run_in_threadpool(portal.sessions.release, token)
        if isinstance(outcome, Response):
            return outcome
        if outcome.queued_request is not None:
            session.data["queued"] = outcome.queued_request
            await run_in_threadpool(cookies.save, session)
            return RedirectResponse("/waiting", status_code=303)
        session.data["downloads"] = [
            {"handle": d.handle, "filename": d.filename, "what": d.what} for d in outcome.downloads
        ]
        await run_in_threadpool(cookies.save, session)
        # Rendered here, not after a redirect: a generated password is shown once and is
        # never stored, not even in the session.
        response = page(
            session,
            "done.html",
            downloads=session.data["downloads"],
            password=outcome.generated_password,
            mail=outcome.email,
            fetching=None,
        )
        response.background = BackgroundTask(portal.after_enrollment)
        return response

    async def done(request: Request) -> Response:
        session = await load(request)
        if session.identity is None:
            return RedirectResponse("/", status_code=303)
        if not session.data.get("downloads"):
            return RedirectResponse("/form", status_code=303)
        return page(
            session,
            "done.html",
            downloads=session.data["downloads"],
            password=None,
            mail=portal.form(session.identity).mail,
            fetching=None,
        )

    async def fetch(request: Request) -> Response:
        """The done page with one file marked as downloading, which it then starts (a
        meta refresh: no script). The Download button is gone once it was used."""
        session = await load(request)
        if session.identity is None:
            return RedirectResponse("/", status_code=303)
        handle = check_handle(request.path_params["handle"])
        downloads = session.data.get("downloads") or []
        if handle is None or not any(d.get("handle") == handle for d in downloads):
            return error(
                session, "This download link is not valid, was used or has expired.", status=404
            )
        fetched = any(d.get("handle") == handle and d.get("fetched") for d in downloads)
        return page(
            session,
            "done.html",
            downloads=downloads,
            password=None,
            mail=portal.form(session.identity).mail,
            fetching=None if fetched else handle,
        )

    async def download(request: Request) -> Response:
        if request.method != "GET":  # a HEAD probe must not spend the one download
            return Response(status_code=405, headers={"Allow": "GET"})
        session = await load(request)
        handle = check_handle(request.path_params["handle"])
        if handle is None or session.token is None or session.identity is None:
            return error(
                session, "This download link is not valid, was used or has expired.", status=404
            )
        if refused := not_a_person(session):
            return refused
        login = portal.form(session.identity).login
        try:
            stored = await run_in_threadpool(portal.take, handle, session.token, login=login)
        except NotFoundError as exc:
            return error(session, f"{str(exc)[:1].upper()}{str(exc)[1:]}.", status=404)
        for item in session.data.get("downloads", []):
            if item.get("handle") == handle:
                item["fetched"] = True
        await run_in_threadpool(cookies.save, session)
        return _attachment(stored.data, "application/x-pkcs12", stored.filename)

    async def download_profile(request: Request) -> Response:
        """The one-time PKCS#12 download, wrapped in an Apple profile (no password in it)."""
        if request.method != "GET":
            return Response(status_code=405, headers={"Allow": "GET"})
        session = await load(request)
        handle = check_handle(request.path_params["handle"])
        if handle is None or session.token is None or session.identity is None:
            return error(
                session, "This download link is not valid, was used or has expired.", status=404
            )
        if refused := not_a_person(session):
            return refused
        login = portal.form(session.identity).login
        try:
            name, profile = await run_in_threadpool(
                portal.take_as_profile, handle, session.token, login=login
            )
        except NotFoundError as exc:
            return error(session, f"{str(exc)[:1].upper()}{str(exc)[1:]}.", status=404)
        for item in session.data.get("downloads", []):
            if item.get("handle") == handle:
                item["fetched"] = True
        await run_in_threadpool(cookies.save, session)
        return _attachment(profile, MOBILECONFIG_TYPE, name)

    async def waiting(request: Request) -> Response:
        session = await load(request)
        if session.identity is None:
            return RedirectResponse("/", status_code=303)
        request_id = session.data.get("queued")
        if request_id is None:
            return RedirectResponse("/form", status_code=303)
        return page(session, "waiting.html", request_id=request_id)

    async def logout(request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        response = RedirectResponse("/", status_code=303)
        await run_in_threadpool(cookies.end, session, response)
        return response

    # -- the operator console (web/console/): its logon page for anonymous visitors ------

    async def console_logon(request: Request, session: PortalSession) -> Response:
        session = cookies.ensure(session)
        signed_on = await single_sign_on(request, session, "/admin")
        return signed_on or logon_or_challenge(session, next_page="/admin")

    console = ConsoleContext(
        portal=portal, theme=theme, cookies=cookies, logon=console_logon, load=load
    )

    async def tutorial(request: Request) -> Response:
        session = await load(request)
        fetched = [str(d.get("filename")) for d in session.data.get("downloads") or []]
        files = await run_in_threadpool(portal.p12_files, session.identity, fetched)
        return page(session, "tutorial.html", p12_files=files, root_name=portal.root_name)

    async def trust(request: Request) -> Response:
        session = await load(request)
        kit = await run_in_threadpool(lambda: portal.trust_kit)
        links = {name: f"/trust/{name}" for name in KIT_FILES}
        return page(session, "trust.html", kit=kit, links=links)

    async def trust_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in KIT_FILES:
            return Response("not found", status_code=404, media_type="text/plain")
        kit = await run_in_threadpool(lambda: portal.trust_kit)
        media_type, _ = KIT_FILES[name]
        response = _attachment(kit.files[name], media_type, name)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    async def static(request: Request) -> Response:
        found = theme.static_file(request.path_params["path"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        path, media_type = found
        headers = {"Cache-Control": "public, max-age=86400"}
        if media_type == "image/svg+xml":  # an SVG opened on its own runs no script
            headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return FileResponse(path, media_type=media_type, headers=headers)

    operator_logon = operator_logon_route(
        portal, cookies, checked_post=checked_post, logon_page=logon_page, limiter=logon_limiter
    )
    return [
        Route("/", home, methods=["GET"]),
        Route("/enroll/{token}", invitation, methods=["GET"]),
        Route("/logon", logon, methods=["POST"]),
        Route("/oidc/callback", oidc_callback, methods=["GET"]),
        Route("/oidc/{name}", oidc_start, methods=["GET"]),
        Route("/form", show_form, methods=["GET"]),
        Route("/form", submit_form, methods=["POST"]),
        Route("/renew", renew, methods=["POST"]),
        Route("/done", done, methods=["GET"]),
        Route("/fetch/{handle}", fetch, methods=["GET"]),
        Route("/download/{handle}", download, methods=["GET"]),
        Route("/download/{handle}/mobileconfig", download_profile, methods=["GET"]),
        Route("/waiting", waiting, methods=["GET"]),
        Route("/logout", logout, methods=["POST"]),
        *console_routes(console),
        operator_logon,
        Route("/tutorial", tutorial, methods=["GET"]),
        Route("/trust", trust, methods=["GET"]),
        Route("/trust/{name}", trust_file, methods=["GET"]),
        Route("/static/{path:path}", static, methods=["GET"]),
    ]
