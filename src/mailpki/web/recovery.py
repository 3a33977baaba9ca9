"""The Key Recovery Service over HTTP (`mailpki recovery-service serve`).

Endpoints, all thin: GET /v1/info (the public transport key to pin), POST
/v1/messages (one CMS-signed message; the service does every check), POST
/v1/alerts/{id}/confirm (the second contact's token), POST /v1/witness (an instance's
audit checkpoint to witness) and GET /v1/witness/{instance}?after=N (the chain held).
Refusals are 403 with a JSON reason; nothing here decides anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailpki.errors import InputError, MailPKIError, NotFoundError, RecoveryRefused
from mailpki.recovery.service import RecoveryService
from mailpki.recovery.witness import MAX_SUBMISSION_BYTES, witness_of

MAX_BODY = 512 * 1024


async def _body(request: Request, limit: int = MAX_BODY) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise InputError("the request body is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise InputError("the request body is too large")
    return b"".join(chunks)


def _error(exc: MailPKIError) -> JSONResponse:
    if isinstance(exc, NotFoundError):
        status = 404
    elif isinstance(exc, RecoveryRefused):
        status = 403
    elif isinstance(exc, InputError):
        status = 400
    else:
        status = 500
    message = str(exc) if status != 500 else "the recovery service failed; see its log"
    return JSONResponse({"error": message}, status_code=status)


def create_recovery_app(service: RecoveryService) -> Starlette:
    async def info(request: Request) -> Response:
        return JSONResponse(service.info())

    async def messages(request: Request) -> Response:
        try:
            data = await _body(request)
            result = await run_in_threadpool(service.handle, data)
        except MailPKIError as exc:
            return _error(exc)
        return JSONResponse(result)

    async def confirm(request: Request) -> Response:
        try:
            alert_id = int(request.path_params["alert_id"])
            raw = await _body(request)
            try:
                token = json.loads(raw or b"{}").get("token", "")
            except (json.JSONDecodeError, AttributeError):
                raise InputError('send {"token": "..."} as JSON') from None
            if not isinstance(token, str) or not token:
                raise InputError("a confirmation token is required")
            await run_in_threadpool(
                service.confirm_alert, alert_id, token, actor="http:alert-contact"
            )
        except MailPKIError as exc:
            return _error(exc)
        return JSONResponse({"alert": alert_id, "confirmed": True})

    witness = witness_of(service)

    async def witness_submit(request: Request) -> Response:
        try:
            data = await _body(request, MAX_SUBMISSION_BYTES)
            result = await run_in_threadpool(witness.accept, data)
        except MailPKIError as exc:
            return _error(exc)
        return JSONResponse(result)

    async def witness_copy(request: Request) -> Response:
        try:
            after_text = request.query_params.get("after", "0")
            if not after_text.isdigit() or len(after_text) > 19:
                raise InputError("'after' must be a record number")
            instance = str(request.path_params["instance"])
            result = await run_in_threadpool(witness.copy, instance, after=int(after_text))
        except MailPKIError as exc:
            return _error(exc)
        return JSONResponse(result)

    return Starlette(
        routes=[
            Route("/v1/witness", witness_submit, methods=["POST"]),
            Route("/v1/witness/{instance:str}", witness_copy, methods=["GET"]),
            Route("/v1/info", info, methods=["GET"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/alerts/{alert_id:int}/confirm", confirm, methods=["POST"]),
        ]
    )


def run_recovery_server(home: Path, *, host: str, port: int) -> None:
    import uvicorn

    service = RecoveryService.open(home)
    service.info()  # fail now, not on the first request, if the home is broken
    uvicorn.run(
        create_recovery_app(service), host=host, port=port, log_level="warning", access_log=False
    )
