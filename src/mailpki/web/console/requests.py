"""The queues: enrollment requests (officers decide), recovery (read-only)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailpki.errors import AuthenticationError, InputError, MailPKIError, NotFoundError
from mailpki.instance.console_requests import decide, pending_requests, recovery_overview
from mailpki.policy.operator_roles import Permission
from mailpki.web.console.frame import ConsoleContext, field


def routes(context: ConsoleContext) -> list[BaseRoute]:
    instance = context.instance

    async def queue(request: Request) -> Response:
        guarded = await context.guard(request, Permission.READ_REQUESTS)
        if isinstance(guarded, Response):
            return guarded
        visit, user = guarded
        pending = await run_in_threadpool(pending_requests, instance, user)
        notice = await context.take_notice(visit)
        return context.render(
            visit,
            "admin.html",
            pending=pending,
            notice=notice,
            may_decide=user.may(Permission.DECIDE_REQUESTS),
        )

    async def decide_one(request: Request) -> Response:
        posted = await context.posted(request, Permission.DECIDE_REQUESTS)
        if isinstance(posted, Response):
            return posted
        visit, user, form = posted
        decision = field(form, "decision")
        try:
            if decision not in ("approve", "reject"):
                raise InputError("choose approve or reject")
            view = await run_in_threadpool(
                lambda: decide(
                    instance,
                    user,
                    int(request.path_params["request_id"]),
                    approve=decision == "approve",
                    note=field(form, "note", limit=500),
                )
            )
            message = f"Request {view.id} ({view.login}) {view.state}."
        except AuthenticationError as exc:
            return context.refuse(visit, f"{exc}.", status=403)
        except (InputError, NotFoundError) as exc:
            message = f"{str(exc)[:1].upper()}{str(exc)[1:]}."
        return await context.flash(visit, message, "/admin/requests")

    async def recovery(request: Request) -> Response:
        guarded = await context.guard(request, Permission.READ_RECOVERY_REPORT)
        if isinstance(guarded, Response):
            return guarded
        visit, user = guarded
        admin = request.query_params.get("admin", "")[:400]
        since = request.query_params.get("since", "")[:40]
        try:
            overview = await run_in_threadpool(
                lambda: recovery_overview(instance, user, admin=admin or None, since=since or None)
            )
        except InputError as exc:
            return context.refuse(visit, f"{exc}.", status=400)
        except MailPKIError as exc:
            return context.refuse(visit, f"The recovery service did not answer: {exc}", status=503)
        return context.render(
            visit, "console/recovery.html", overview=overview, admin=admin, since=since
        )

    return [
        Route("/admin/requests", queue, methods=["GET"]),
        Route("/admin/requests/{request_id:int}", decide_one, methods=["POST"]),
        Route("/admin/recovery", recovery, methods=["GET"]),
    ]
