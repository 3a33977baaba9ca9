"""The audit log browser and the settings page (read-only)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailpki.errors import InputError
from mailpki.instance.console_audit import AuditPage, audit_page, parse_filter
from mailpki.instance.console_overview import audit_summary, settings
from mailpki.policy.operator_roles import Permission
from mailpki.web.console.frame import ConsoleContext


def _query(page: AuditPage, number: int) -> str:
    from urllib.parse import urlencode

    wanted = page.filter
    values = {
        "event": wanted.event,
        "actor": wanted.actor,
        "since": wanted.since.isoformat() if wanted.since else "",
        "until": wanted.until.isoformat() if wanted.until else "",
        "page": str(number),
    }
    return "?" + urlencode({k: v for k, v in values.items() if v})


def routes(context: ConsoleContext) -> list[BaseRoute]:
    instance = context.instance

    async def browse(request: Request) -> Response:
        guarded = await context.guard(request, Permission.READ_AUDIT)
        if isinstance(guarded, Response):
            return guarded
        visit, user = guarded
        params = request.query_params
        raw = {name: params.get(name, "")[:400] for name in ("event", "actor", "since", "until")}
        try:
            wanted = parse_filter(**raw, page=params.get("page", "")[:12])
        except InputError as exc:
            return context.render(
                visit, "console/audit.html", status=400, page=None, raw=raw,
                message=f"{exc}.", summary=None, links={},
            )  # fmt: skip
        fresh = params.get("verify") == "now"
        page = await run_in_threadpool(audit_page, instance, user, wanted)
        summary = await run_in_threadpool(lambda: audit_summary(instance, fresh=fresh))
        links = {}
        if wanted.page > 1:
            links["previous"] = _query(page, wanted.page - 1)
        if wanted.page < page.pages:
            links["next"] = _query(page, wanted.page + 1)
        return context.render(
            visit, "console/audit.html", page=page, raw=raw, message=None, summary=summary,
            links=links,
        )  # fmt: skip

    async def show_settings(request: Request) -> Response:
        guarded = await context.guard(request, Permission.READ_AUDIT)
        if isinstance(guarded, Response):
            return guarded
        visit, _ = guarded
        rows = await run_in_threadpool(settings, instance)
        return context.render(visit, "console/settings.html", rows=rows)

    return [
        Route("/admin/audit", browse, methods=["GET"]),
        Route("/admin/settings", show_settings, methods=["GET"]),
    ]
