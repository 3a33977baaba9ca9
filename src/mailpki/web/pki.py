"""Public PKI endpoints: CRLs, CA certificates and OCSP (RFC 5280, RFC 6960 appendix A).

These URLs go into every certificate (CDP, AIA) and are fetched by any mail client
on the network, unauthenticated. So: names are checked against a strict pattern
before the source sees them, bodies are bounded, nothing raised below leaks to
the client, and nothing is logged from request bodies.

The source does the real work; this layer only routes, checks and sets headers.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mailpki.web.certdir import (
    COMMON_HEADERS,
    CertificateDirectorySource,
    PageFrame,
    SecurityHeaders,
    certdir_routes,
)

__all__ = ["MAX_OCSP_GET_PATH", "MAX_OCSP_REQUEST", "PKISource", "create_pki_app"]

log = logging.getLogger(__name__)

_A = TypeVar("_A")
_R = TypeVar("_R")

MAX_OCSP_REQUEST = 64 * 1024  # a real request is ~100 bytes; bound what we read
MAX_OCSP_GET_PATH = 8 * 1024  # RFC 5019 uses GET only below 255 bytes; servers cap URLs anyway
_MAX_NAME = 100

# One safe file name: letters/digits in groups joined by single '-' or '_', then the
# extension. No dots inside, so no '..', no '/', no NUL, no '%' can get through.
_CRL_NAME = re.compile(r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*\.crl")
_CA_NAME = re.compile(r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*\.(crt|pem)")
_CA_TYPES = {"crt": "application/pkix-cert", "pem": "application/x-pem-file"}

_OCSP_RESPONSE = "application/ocsp-response"
_OCSP_REQUEST = "application/ocsp-request"
# Unsigned OCSP error responses (RFC 6960 §4.2.1): SEQUENCE { ENUMERATED status }.
_OCSP_INTERNAL_ERROR = bytes.fromhex("30030a0102")


class PKISource(CertificateDirectorySource, Protocol):
    """Where the PKI endpoints get their bytes from (CA component, cache, files).

    Also the certificate directory's source: valid_certificates(mail) (web/certdir.py).
    """

    def crl(self, name: str) -> bytes | None:
        """DER CRL for a name like "issuing.crl", "issuing-3.crl"; None if there is none."""
        ...

    def ca_certificate(self, name: str) -> bytes | None:
        """ "root.crt", "issuing.crt", "issuing-g2.crt"... (DER) or "chain.pem" (PEM); None if there is none."""
        ...

    def ocsp(self, request_der: bytes) -> bytes:
        """DER OCSPResponse for a DER OCSPRequest; must not raise on bad input."""
        ...


def _not_found() -> Response:
    return PlainTextResponse("not found", status_code=404)


def _ocsp_successful(der: bytes) -> bool:
    """True when an OCSPResponse's status is successful (0), read from its first bytes.

    Error responses must not be cached by HTTP caches; parsing the whole response
    just for that would cost more than building it from cache.
    """
    if len(der) < 5 or der[0] != 0x30:
        return False
    first = der[1]
    offset = 2 + (first & 0x7F if first & 0x80 else 0)  # skip a long-form length
    return der[offset : offset + 3] == b"\x0a\x01\x00"


def _decode_get_request(encoded: str) -> bytes | None:
    """The DER request from the GET path: base64, already %-decoded by the server.

    RFC 6960 appendix A.1 wants url-encoding of base64; clients differ in what
    they escape, so '/' may arrive as a path separator (kept by the path
    converter), and some send URL-safe base64 or drop the padding.
    """
    text = encoded.strip().replace(" ", "+")  # '+' turned into a space by a form-decoder
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return der or None


class OCSPFastPath:
    """OCSP answered before Starlette's routing, with precomputed headers: GET
    /ocsp/<base64>, and POST /ocsp with an application/ocsp-request body.

    A pre-signed answer costs a few microseconds; routing, Request and Response objects
    cost several times that. Same checks and headers as the routed handlers, which
    still answer everything this does not take (HEAD, too-long paths, bad base64, a
    wrong content type, a declared length over the limit).
    """

    def __init__(self, app: ASGIApp, *, answer: Callable[[bytes], bytes], max_age: int) -> None:
        self.app = app
        self._answer = answer
        common = [
            (b"content-type", _OCSP_RESPONSE.encode()),
            *((k.lower().encode(), v.encode()) for k, v in COMMON_HEADERS.items()),
        ]
        self._cacheable = [
            *common,
            (
                b"cache-control",
                f"public, max-age={max_age}, no-transform, must-revalidate".encode(),
            ),
        ]
        self._no_store = [*common, (b"cache-control", b"no-store")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith("/ocsp/") and len(path) - 6 <= MAX_OCSP_GET_PATH:
                request_der = _decode_get_request(path[6:])
                if request_der is not None:
                    try:
                        der = self._answer(request_der)
                    except Exception as exc:
                        log.error("OCSP source failed", exc_info=exc)
                        der = _OCSP_INTERNAL_ERROR
                    headers = self._cacheable if _ocsp_successful(der) else self._no_store
                    await self._send(send, der, headers)
                    return
        elif (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in ("/ocsp", "/ocsp/")
        ):
            body = await self._read_post(scope, receive, send)
            if body is not None:
                await self._send(send, self._post_answer(body), self._no_store)
            return
        await self.app(scope, receive, send)

    def _post_answer(self, body: bytes) -> bytes:
        try:
            return self._answer(body)
        except Exception as exc:
            log.error("OCSP source failed", exc_info=exc)
            return _OCSP_INTERNAL_ERROR

    @staticmethod
    async def _send(send: Send, der: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*headers, (b"content-length", str(len(der)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": der})

    async def _read_post(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request body, or None when a response has been sent (or delegated)."""
        content_type = b""
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = value
        ctype = content_type.split(b";", 1)[0].strip().lower()
        too_long = declared is not None and (
            not declared.isdigit() or int(declared) > MAX_OCSP_REQUEST
        )
        if ctype != _OCSP_REQUEST.encode() or too_long:
            await self.app(scope, receive, send)  # the routed handler says what is wrong
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_OCSP_REQUEST:  # chunked bodies declare nothing
                response = PlainTextResponse("request too large", status_code=413)
                await response(scope, receive, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def create_pki_app(
    source: PKISource,
    *,
    ocsp_max_age: int = 60,
    crl_max_age: int = 300,
    ca_max_age: int = 86_400,
    blocking_source: bool = False,
    inline_ocsp: bool = False,
    certdir_rate_per_minute: int = 30,
    extra_routes: Sequence[BaseRoute] = (),
    certdir_frame: PageFrame | None = None,
) -> Starlette:
    """Build the Starlette app for the public PKI endpoints.

    ``ocsp_max_age`` should not exceed the responder's cache window (or the
    response's nextUpdate). ``blocking_source=True`` runs source calls in the
    thread pool: use it when the source does blocking database I/O; leave it off
    when the source answers from memory, since the thread hop costs more than a
    cached OCSP answer (~50 µs vs a few µs). ``inline_ocsp=True`` answers OCSP on
    the event loop even then: one indexed lookup (~0.1 ms) costs less than the thread
    hop and the GIL hand-off between loop and pool, which capped signed responses
    at ~1,000/s. ``certdir_rate_per_minute`` limits directory lookups per client address
    (burst 10); 0 leaves the certificate directory out.
    """

    async def call(fn: Callable[[_A], _R], arg: _A) -> _R:
        if blocking_source:
            return await run_in_threadpool(fn, arg)
        return fn(arg)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok", headers={"Cache-Control": "no-store"})

    async def get_crl(request: Request) -> Response:
        name: str = request.path_params["name"]
        if len(name) > _MAX_NAME or not _CRL_NAME.fullmatch(name):
            return _not_found()
        try:
            der = await call(source.crl, name)
        except Exception as exc:
            log.error("CRL source failed for %s: %s", name, type(exc).__name__, exc_info=exc)
            return PlainTextResponse("internal error", status_code=500)
        if der is None:
            return _not_found()
        return Response(
            der,
            media_type="application/pkix-crl",
            headers={"Cache-Control": f"public, max-age={crl_max_age}"},
        )

    async def get_ca(request: Request) -> Response:
        name: str = request.path_params["name"]
        m = _CA_NAME.fullmatch(name) if len(name) <= _MAX_NAME else None
        if m is None:
            return _not_found()
        try:
            body = await call(source.ca_certificate, name)
        except Exception as exc:
            log.error("CA certificate source failed for %s", name, exc_info=exc)
            return PlainTextResponse("internal error", status_code=500)
        if body is None:
            return _not_found()
        return Response(
            body,
            media_type=_CA_TYPES[m.group(1)],
            headers={"Cache-Control": f"public, max-age={ca_max_age}"},
        )

    async def answer_ocsp(request_der: bytes, *, cacheable: bool) -> Response:
        try:
            der = source.ocsp(request_der) if inline_ocsp else await call(source.ocsp, request_der)
        except Exception as exc:
            # The source promised not to raise; if it does, answer in OCSP terms.
            log.error("OCSP source failed", exc_info=exc)
            der = _OCSP_INTERNAL_ERROR
        if cacheable and _ocsp_successful(der):
            cache = f"public, max-age={ocsp_max_age}, no-transform, must-revalidate"
        else:
            cache = "no-store"
        return Response(der, media_type=_OCSP_RESPONSE, headers={"Cache-Control": cache})

    async def post_ocsp(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != _OCSP_REQUEST:
            return PlainTextResponse(f"content-type must be {_OCSP_REQUEST}", status_code=400)
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > MAX_OCSP_REQUEST:
                    return PlainTextResponse("request too large", status_code=413)
            except ValueError:
                return PlainTextResponse("bad content-length", status_code=400)
        # Read in chunks even after the header check: chunked bodies declare nothing.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_OCSP_REQUEST:
                return PlainTextResponse("request too large", status_code=413)
            chunks.append(chunk)
        return await answer_ocsp(b"".join(chunks), cacheable=False)

    async def get_ocsp(request: Request) -> Response:
        encoded: str = request.path_params["b64"]
        if len(encoded) > MAX_OCSP_GET_PATH:
            return PlainTextResponse("request too long for GET; use POST", status_code=414)
        request_der = _decode_get_request(encoded)
        if request_der is None:
            return PlainTextResponse("request is not base64", status_code=400)
        return await answer_ocsp(request_der, cacheable=True)

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/crl/{name}", get_crl, methods=["GET"]),
        Route("/ca/{name}", get_ca, methods=["GET"]),
        Route("/ocsp", post_ocsp, methods=["POST"]),
        Route("/ocsp/", post_ocsp, methods=["POST"]),  # some clients POST to the GET base
        Route("/ocsp/{b64:path}", get_ocsp, methods=["GET"]),
    ]
    if certdir_rate_per_minute > 0:
        routes += certdir_routes(
            source,
            rate_per_minute=certdir_rate_per_minute,
            blocking_source=blocking_source,
            frame=certdir_frame,
        )
    routes += list(extra_routes)
    middleware = [Middleware(SecurityHeaders)]
    if inline_ocsp:
        # Outermost: a cached GET skips the security-header wrapper too (it sets them).
        middleware.insert(0, Middleware(OCSPFastPath, answer=source.ocsp, max_age=ocsp_max_age))
    app = Starlette(routes=routes, middleware=middleware)
    # A strict API: "/crl/x.crl/" is not found rather than redirected.
    app.router.redirect_slashes = False
    return app
