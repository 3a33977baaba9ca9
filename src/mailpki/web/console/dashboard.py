"""GET /admin: the dashboard, every console role's home."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailpki.instance.console_overview import dashboard
from mailpki.web.console.frame import ConsoleContext


def routes(context: ConsoleContext) -> list[BaseRoute]:
    async def home(request: Request) -> Response:
        guarded = await context.guard(request, None)
        if isinstance(guarded, Response):
            return guarded
        visit, _ = guarded
        board = await run_in_threadpool(dashboard, context.instance)
        notice = await context.take_notice(visit)
        return context.render(visit, "console/dashboard.html", board=board, notice=notice)

    return [Route("/admin", home, methods=["GET"])]
