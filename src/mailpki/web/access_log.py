"""What `mailpki serve` logs: one line per request and every error with its reason.

An access line names the method, the path, the status, the time taken and the client:

    2026-12-04 15:40:02 INFO mailpki.access: GET /certs?mail=… 404 3.1 ms 127.0.0.1

Secrets never reach the log: query values are dropped (only the parameter names stay)
and the one-time parts of paths (invitation tokens, download handles) are replaced by
`…`. A refused request carries the reason the person was shown (`note()` from the
handler); a failure inside the app is logged with its exception.

Plain text is the format here; `logging_config()` builds the `logging.dictConfig` that
uvicorn applies in the server process and in each worker process, so a future format
option belongs in that one function.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ACCESS_LOGGER",
    "LOG_LEVELS",
    "AccessLog",
    "check_level",
    "logging_config",
    "note",
    "public_path",
]

ACCESS_LOGGER = "mailpki.access"
LOG_LEVELS = ("debug", "info", "warning", "error")
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "…"
# Path prefixes whose next segment is a secret: the link is the credential.
SECRET_SEGMENTS = ("/enroll/", "/download/", "/fetch/")
MAX_LOGGED_PATH = 200
MAX_REASON = 300

log = logging.getLogger(ACCESS_LOGGER)
_reason: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "mailpki_access_reason", default=None
)


def check_level(level: str) -> str:
    """The level in lower case; ValueError names the choices."""
    lowered = level.strip().lower()
    if lowered not in LOG_LEVELS:
        raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    return lowered


def logging_config(level: str = "info") -> dict[str, Any]:
    """The dictConfig for mailpki's and uvicorn's loggers: plain lines on stderr."""
    name = check_level(level).upper()
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": PLAIN_FORMAT, "datefmt": "%Y-%m-%d %H:%M:%S"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "mailpki": {"handlers": ["stderr"], "level": name, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": name, "propagate": False},
            "uvicorn.error": {"level": name},
            # Our own access lines replace uvicorn's (which print the query string).
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
    }


def public_path(path: str, query: bytes | str = b"") -> str:
    """The path as it may be logged: secret segments and query values left out."""
    shown = path
    for prefix in SECRET_SEGMENTS:
        if shown.startswith(prefix) and len(shown) > len(prefix):
            shown = prefix + REDACTED
            break
    shown = "".join(c if c.isprintable() else "?" for c in shown)[:MAX_LOGGED_PATH]
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    if query:
        names = [part.split("=", 1)[0] for part in query.split("&") if part]
        shown += "?" + "&".join(
            "".join(c if c.isalnum() or c in "_-." else "?" for c in name[:40]) + "=" + REDACTED
            for name in names[:10]
        )
    return shown


def note(reason: str) -> None:
    """Attach the reason of a refusal to this request's access line (no-op elsewhere)."""
    holder = _reason.get()
    if holder is not None:
        holder.append(" ".join(reason.split())[:MAX_REASON])


class AccessLog:
    """ASGI middleware writing the access line after each HTTP response.

    Plain ASGI (not BaseHTTPMiddleware): OCSP answers in microseconds and this must not
    cost more than a clock read and, at INFO, one log record."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        reasons: list[str] = []
        token = _reason.set(reasons)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            self._write(scope, status or 500, started, [f"{type(exc).__name__}: {exc}"])
            raise
        finally:
            _reason.reset(token)
        self._write(scope, status, started, reasons)

    @staticmethod
    def _write(scope: Scope, status: int, started: float, reasons: list[str]) -> None:
        level = logging.ERROR if status >= 500 else logging.INFO
        if not log.isEnabledFor(level):
            return
        client = scope.get("client")
        line = "%s %s %d %.1f ms %s" % (  # noqa: UP031 - one cheap format, only when logged
            scope.get("method", "?"),
            public_path(scope.get("path", ""), scope.get("query_string", b"")),
            status,
            (time.perf_counter() - started) * 1000,
            client[0] if client else "-",
        )
        if reasons:
            line += " - " + "; ".join(reasons)
        log.log(level, "%s", line)
