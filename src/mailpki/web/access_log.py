"""What `mailpki serve` logs: one line per request and every error with its reason.

An access line names the method, the path, the status, the time taken and the client:

    2026-12-04 15:40:02 INFO mailpki.access: GET /certs?mail=… 404 3.1 ms 127.0.0.1 5f0c1e9a2b7d4c3e

Secrets never reach the log: query values are dropped (only the parameter names stay)
and the one-time parts of paths (invitation tokens, download handles) are replaced by
`…`. A refused request carries the reason the person was shown (`note()` from the
handler); a failure inside the app is logged with its exception.

Every response carries an `X-Request-ID` (the caller's, when it sent a sane one, else a
new one), and its access line names it, so a user's report can be matched with the log.

`logging_config()` builds the `logging.dictConfig` that uvicorn applies in the server
process and in each worker process: plain lines (the default) or, with `log.format =
json`, one JSON object per line (time, level, logger, message, and for access lines the
method, path, status, ms, client, request_id and reasons as their own fields).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ACCESS_LOGGER",
    "LOG_LEVELS",
    "AccessLog",
    "check_format",
    "check_level",
    "logging_config",
    "note",
    "public_path",
]

ACCESS_LOGGER = "mailpki.access"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("plain", "json")
REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
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


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an access line's parts are fields of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


JsonFormatter.converter = time.gmtime  # type: ignore[assignment]


def check_format(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in LOG_FORMATS:
        raise ValueError(f"the log format must be one of {', '.join(LOG_FORMATS)}, not {value!r}")
    return lowered


def logging_config(level: str = "info", fmt: str = "plain") -> dict[str, Any]:
    """The dictConfig for mailpki's and uvicorn's loggers: plain or JSON lines on stderr."""
    name = check_level(level).upper()
    formatter = check_format(fmt)
    handler = {
        "class": "logging.StreamHandler",
        "formatter": formatter,
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": PLAIN_FORMAT, "datefmt": "%Y-%m-%d %H:%M:%S"},
            "json": {"()": "mailpki.web.access_log.JsonFormatter"},
        },
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


class RequestRecorder(Protocol):
    """Where AccessLog reports each request's route template, status and duration
    (`web.health.HttpMetrics` for /metrics)."""

    def record(self, route: str, status: int, seconds: float) -> None: ...


def note(reason: str) -> None:
    """Attach the reason of a refusal to this request's access line (no-op elsewhere)."""
    holder = _reason.get()
    if holder is not None:
        holder.append(" ".join(reason.split())[:MAX_REASON])


class AccessLog:
    """ASGI middleware: after each HTTP response, the access line and (with `metrics`)
    the request counter and latency histogram; the X-Request-ID on every response.

    Plain ASGI (not BaseHTTPMiddleware), one layer for both: OCSP answers in
    microseconds, and this captures the status and the time once and costs little more
    than a clock read, the metric updates and, at INFO, one log record."""

    def __init__(self, app: ASGIApp, *, metrics: RequestRecorder | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        reasons: list[str] = []
        token = _reason.set(reasons)
        request_id = _request_id(scope)
        request_id_header = (REQUEST_ID_HEADER, request_id.encode())

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER
                ]
                headers.append(request_id_header)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            self._measure(scope, status or 500, started)
            self._write(scope, status or 500, started, [f"{type(exc).__name__}: {exc}"], request_id)
            raise
        finally:
            _reason.reset(token)
        self._measure(scope, status or 500, started)
        self._write(scope, status, started, reasons, request_id)

    def _measure(self, scope: Scope, status: int, started: float) -> None:
        if self.metrics is not None:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.record(template, status, time.perf_counter() - started)

    @staticmethod
    def _write(
        scope: Scope, status: int, started: float, reasons: list[str], request_id: str
    ) -> None:
        level = logging.ERROR if status >= 500 else logging.INFO
        if not log.isEnabledFor(level):
            return
        client = scope.get("client")
        method = scope.get("method", "?")
        path = public_path(scope.get("path", ""), scope.get("query_string", b""))
        elapsed = (time.perf_counter() - started) * 1000
        address = client[0] if client else "-"
        line = "%s %s %d %.1f ms %s %s" % (  # noqa: UP031 - one cheap format, only when logged
            method, path, status, elapsed, address, request_id,
        )  # fmt: skip
        if reasons:
            line += " - " + "; ".join(reasons)
        fields = {
            "method": method, "path": path, "status": status, "ms": round(elapsed, 1),
            "client": address, "request_id": request_id, "reasons": reasons,
        }  # fmt: skip
        log.log(level, "%s", line, extra={"access": fields})


def _request_id(scope: Scope) -> str:
    """The caller's X-Request-ID when it is short and plain, else a new random one."""
    for name, value in scope.get("headers", []):
        if name.lower() == REQUEST_ID_HEADER:
            text = str(value.decode("latin-1"))
            if _SANE_REQUEST_ID.fullmatch(text):
                return text
            break
    return secrets.token_hex(8)
