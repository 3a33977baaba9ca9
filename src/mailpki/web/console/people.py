"""People and certificates: search, a person's page, revocation with a confirmation
step, invitations (one person or a CSV of logins)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailpki.ca.crl import REASONS, parse_reason, reason_name
from mailpki.ca.serials import show_serial
from mailpki.errors import AuthenticationError, InputError, MailPKIError, NotFoundError
from mailpki.instance.console_invites import MAX_CSV_BYTES, InviteOutcome, invite, invite_csv
from mailpki.instance.console_people import (
    certificate,
    owner_login,
    person_page,
    revoke,
    search,
)
from mailpki.policy.operator_roles import Permission
from mailpki.web.console.frame import ConsoleContext, Visit, field

# The reasons an operator chooses from (RFC 5280 names; hold and removeFromCRL are not
# used for S/MIME certificates).
REVOCATION_REASONS = tuple(
    reason_name(flag)
    for name, flag in REASONS.items()
    if name not in ("certificatehold", "removefromcrl", "cacompromise", "aacompromise")
)


def _sentence(exc: Exception) -> str:
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{text[:1].upper()}{text[1:]}."


def routes(context: ConsoleContext) -> list[BaseRoute]:
    instance = context.instance

    async def find(request: Request) -> Response:
        guarded = await context.guard(request, Permission.READ_PEOPLE)
        if isinstance(guarded, Response):
            return guarded
        visit, user = guarded
        query = request.query_params.get("q", "")[:400]
        if not query.strip():
            return context.render(visit, "console/people.html", query="", result=None,
                                  message=None)  # fmt: skip
        try:
            result = await run_in_threadpool(search, instance, user, query)
        except InputError as exc:
            return context.render(visit, "console/people.html", status=400, query=query,
                                  result=None, message=_sentence(exc))  # fmt: skip
        return context.render(
            visit, "console/people.html", query=query, result=result, message=None
        )

    async def person(request: Request) -> Response:
        guarded = await context.guard(request, Permission.READ_PEOPLE)
        if isinstance(guarded, Response):
            return guarded
        visit, user = guarded
        try:
            whole_log = request.query_params.get("trail") == "all"
            page = await run_in_threadpool(
                lambda: person_page(
                    instance, user, request.path_params["login"], whole_log=whole_log
                )
            )
        except NotFoundError as exc:
            return context.refuse(visit, _sentence(exc), status=404)
        except MailPKIError as exc:
            return context.refuse(visit, f"The directory did not answer: {exc}", status=503)
        notice = await context.take_notice(visit)
        return context.render(
            visit, "console/person.html", page=page, notice=notice, reasons=REVOCATION_REASONS,
            may_revoke=user.may(Permission.REVOKE), may_invite=user.may(Permission.INVITE),
        )  # fmt: skip

    async def one_certificate(request: Request) -> Response:
        guarded = await context.guard(request, Permission.READ_CERTIFICATES)
        if isinstance(guarded, Response):
            return guarded
        visit, user = guarded
        try:
            info = await run_in_threadpool(
                certificate, instance, user, request.path_params["serial"][:80]
            )
        except (InputError, NotFoundError) as exc:
            return context.refuse(visit, _sentence(exc), status=404)
        owner = await run_in_threadpool(owner_login, instance, info)
        notice = await context.take_notice(visit)
        return context.render(
            visit, "console/certificate.html", info=info, owner=owner, notice=notice,
            reasons=REVOCATION_REASONS, may_revoke=user.may(Permission.REVOKE),
        )  # fmt: skip

    async def confirm_revoke(request: Request) -> Response:
        """Step 1 of 2: what will be revoked and why; nothing changes until confirmed."""
        guarded = await context.guard(request, Permission.REVOKE)
        if isinstance(guarded, Response):
            return guarded
        visit, user = guarded
        reason = request.query_params.get("reason", "")[:40]
        try:
            flag = parse_reason(reason)
            info = await run_in_threadpool(
                certificate, instance, user, request.path_params["serial"][:80]
            )
        except NotFoundError as exc:
            return context.refuse(visit, _sentence(exc), status=404)
        except InputError as exc:
            return context.refuse(visit, _sentence(exc), status=400)
        return context.render(visit, "console/revoke.html", info=info, reason=reason_name(flag))

    async def do_revoke(request: Request) -> Response:
        """Step 2 of 2: the confirmed revocation."""
        posted = await context.posted(request, Permission.REVOKE)
        if isinstance(posted, Response):
            return posted
        visit, user, form = posted
        serial = request.path_params["serial"][:80]
        reason = field(form, "reason", limit=40)
        if field(form, "confirm") != "yes":
            return await context.flash(
                visit,
                "Nothing was revoked: confirm the revocation on its own page.",
                f"/admin/certificates/{quote(serial)}/revoke?reason={quote(reason)}",
            )
        try:
            info = await run_in_threadpool(revoke, instance, user, serial, reason)
        except AuthenticationError as exc:
            return context.refuse(visit, _sentence(exc), status=403)
        except NotFoundError as exc:
            return context.refuse(visit, _sentence(exc), status=404)
        except MailPKIError as exc:  # InputError, already revoked
            return await context.flash(
                visit, f"Not revoked: {_sentence(exc)}", f"/admin/certificates/{quote(serial)}"
            )
        return await context.flash(
            visit,
            f"Certificate {show_serial(info.serial)} ({info.email}) revoked: {info.reason}.",
            f"/admin/certificates/{show_serial(info.serial)}",
        )

    async def invitations(request: Request) -> Response:
        guarded = await context.guard(request, Permission.INVITE)
        if isinstance(guarded, Response):
            return guarded
        visit, _ = guarded
        return context.render(
            visit, "console/invitations.html", outcome=None, message=None,
            max_mb=MAX_CSV_BYTES // (1024 * 1024),
        )  # fmt: skip

    async def invite_one(request: Request) -> Response:
        posted = await context.posted(request, Permission.INVITE)
        if isinstance(posted, Response):
            return posted
        visit, user, form = posted
        logins = [line for line in field(form, "logins").splitlines() if line.strip()][:100]
        resend = field(form, "resend") == "on"
        return await _invited(visit, lambda: invite(instance, user, logins, resend=resend))

    async def invite_file(request: Request) -> Response:
        posted = await context.posted(request, Permission.INVITE, upload=True)
        if isinstance(posted, Response):
            return posted
        visit, user, form = posted
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return context.render(
                visit, "console/invitations.html", status=400, outcome=None,
                message="Choose a CSV file to upload.", max_mb=MAX_CSV_BYTES // (1024 * 1024),
            )  # fmt: skip
        data = await upload.read(MAX_CSV_BYTES + 1)
        resend = field(form, "resend") == "on"
        return await _invited(visit, lambda: invite_csv(instance, user, data, resend=resend))

    async def _invited(visit: Visit, action: Callable[[], InviteOutcome]) -> Response:
        try:
            outcome = await run_in_threadpool(action)
        except InputError as exc:
            return context.render(
                visit, "console/invitations.html", status=400, outcome=None,
                message=_sentence(exc), max_mb=MAX_CSV_BYTES // (1024 * 1024),
            )  # fmt: skip
        return context.render(
            visit, "console/invitations.html", outcome=outcome, message=None,
            max_mb=MAX_CSV_BYTES // (1024 * 1024),
        )  # fmt: skip

    return [
        Route("/admin/people", find, methods=["GET"]),
        Route("/admin/people/{login}", person, methods=["GET"]),
        Route("/admin/certificates/{serial}", one_certificate, methods=["GET"]),
        Route("/admin/certificates/{serial}/revoke", confirm_revoke, methods=["GET"]),
        Route("/admin/certificates/{serial}/revoke", do_revoke, methods=["POST"]),
        Route("/admin/invitations", invitations, methods=["GET"]),
        Route("/admin/invitations", invite_one, methods=["POST"]),
        Route("/admin/invitations/csv", invite_file, methods=["POST"]),
    ]
