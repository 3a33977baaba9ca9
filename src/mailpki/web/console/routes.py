"""The console's routes, gathered from one module per area."""

from __future__ import annotations

from starlette.routing import BaseRoute

from mailpki.web.console import audit, dashboard, people, requests
from mailpki.web.console.frame import ConsoleContext

__all__ = ["ConsoleContext", "console_routes"]


def console_routes(context: ConsoleContext) -> list[BaseRoute]:
    return [
        *dashboard.routes(context),
        *people.routes(context),
        *requests.routes(context),
        *audit.routes(context),
    ]
