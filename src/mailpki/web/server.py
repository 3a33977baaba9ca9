"""The HTTP server of an instance: the enrollment portal and the PKI endpoints."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from markupsafe import Markup
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mailpki.ca.listing import ROOT
from mailpki.ca.settings import ROOT_CRL, crl_scope
from mailpki.errors import AuditUnavailable, DirectoryUnavailable, MailPKIError, StoreError
from mailpki.instance.health import check_readiness, read_status
from mailpki.instance.housekeeping import Housekeeping
from mailpki.instance.instance import Instance
from mailpki.instance.portal import Portal
from mailpki.web.access_log import AccessLog, logging_config, note
from mailpki.web.api.app import ApiPrefix, create_api
from mailpki.web.health import HealthSource, HttpMetrics, health_routes, parse_allow_list
from mailpki.web.pki import create_pki_app
from mailpki.web.portal.routes import portal_routes
from mailpki.web.portal.theme import Theme

HOME_ENV = "MAILPKI_HOME"


class InstancePKISource:
    """Serves stored CRLs, re-signing a stale one on demand (one at a time).

    Partitions and the root CRL are small: a stale one is re-signed before it is
    served. The full CRL can take seconds at a million entries: while the stored one
    is still within its validity it is served at once and re-signed in the background.
    """

    actor = "web:crl-refresh"

    def __init__(self, instance: Instance, *, presign: bool = False) -> None:
        self.instance = instance
        self.ca = instance.ca
        self._refresh_lock = threading.Lock()
        self._background: threading.Thread | None = None
        hierarchy = instance.hierarchy
        self._certificates = {
            "root.crt": hierarchy.root.public_bytes(Encoding.DER),
            # Every generation's certificate: AIA caIssuers of its certificates names it.
            **{
                f"{label}.crt": certificate.public_bytes(Encoding.DER)
                for label, certificate in hierarchy.generations
            },
            "chain.pem": instance.chain_pem(),
        }
        self.ca.responder()  # load the responder key now, not on the first request
        if presign:
            # Load the pre-signed OCSP answers, then keep them fresh (ca/presigned.py).
            self.ca.presigned.start()

    def crl(self, name: str) -> bytes | None:
        """The stored CRL, read where tolerant reads go (the replica while healthy).
        A stale one is looked at again on the primary (the replica may not have the
        newer one yet), re-signed there when it is stale too, and served from there."""
        scope = crl_scope(name)
        if scope is None:
            return None
        label, partition = scope
        reader = self.instance.read_db()
        if not self.ca.crl_is_stale(name, db=reader):
            stored = self.ca.stored_crl(name, db=reader)
            return stored.der if stored else None
        if self.ca.crl_is_stale(name):
            stored = self.ca.stored_crl(name)
            if (
                label != ROOT
                and partition is None
                and stored
                and stored.next_update > datetime.now(UTC)
            ):
                self._refresh_in_background(name, label)
                return stored.der
            with self._refresh_lock:
                if self.ca.crl_is_stale(name):
                    self._refresh(name, label, partition)
        stored = self.ca.stored_crl(name)
        return stored.der if stored else None

    def _refresh_in_background(self, name: str, label: str) -> None:
        with self._refresh_lock:
            if self._background is not None and self._background.is_alive():
                return

            def run() -> None:
                with self._refresh_lock:
                    if self.ca.crl_is_stale(name):
                        self._refresh(name, label, None)

            self._background = threading.Thread(target=run, name=f"refresh {name}", daemon=True)
            self._background.start()

    def _refresh(self, name: str, label: str, partition: int | None) -> None:
        try:
            if name == ROOT_CRL:
                # With the root offline this raises CAError: the stored root CRL is served.
                self.ca.generate_root_crl(actor=self.actor)
            elif not self._signs_crl(label, partition):
                return
            else:
                self.ca.generate_issuing_crl(partition, actor=self.actor, label=label)
            self.instance.seal()
        except MailPKIError:
            # Keep serving the last good CRL rather than failing the fetch.
            return

    def _signs_crl(self, label: str, partition: int | None) -> bool:
        """Whether the issuing CA `label` exists here and has that partition."""
        if label not in dict(self.instance.hierarchy.generations):
            return False
        return partition is None or partition in self.ca.partitions(label)

    def ca_certificate(self, name: str) -> bytes | None:
        return self._certificates.get(name)

    def ocsp(self, request_der: bytes) -> bytes:
        return self.ca.answer_ocsp(request_der)

    def valid_certificates(self, mail: str) -> list[bytes]:
        return self.ca.valid_certificates(mail, db=self.instance.read_db())


def create_app(home: Path, *, housekeeping: bool = False) -> Starlette:
    """The app of one instance; `housekeeping` starts the server's background chores
    (a daemon thread), which the real server wants and an embedding test does not."""
    instance = Instance.open(home)
    portal = Portal(instance)
    theme = Theme(instance.home)

    def certdir_frame(title: str, inner: str) -> str:
        return theme.render(
            "certdir.html",
            title=title,
            # Built by the certificate directory, which escapes every value it puts in.
            inner=Markup(inner),  # noqa: S704
            org=portal.org,
            csrf="",
            user=None,
            certdir_url="/certs",
        )

    registry = CollectorRegistry(auto_describe=True)
    health = HealthSource(
        readiness=lambda: check_readiness(instance),
        status=lambda: read_status(instance),
        metrics_allow=parse_allow_list(str(instance.config.get("web.metrics_allow"))),
    )
    app = create_pki_app(
        InstancePKISource(instance, presign=housekeeping),
        blocking_source=True,
        inline_ocsp=True,
        certdir_rate_per_minute=int(instance.config.get("web.certdir_rate_per_minute")),
        extra_routes=[
            *health_routes(health, registry),
            *portal_routes(portal, theme),
        ],
        certdir_frame=certdir_frame,
    )
    api = create_api(instance, rate_per_minute=int(instance.config.get("api.rate_per_minute")))
    app.add_middleware(ApiPrefix, api=api)

    async def http_error(request: Request, exc: Exception) -> Response:
        """404 and 405 from the router in the portal's frame (the PKI endpoints answer
        their own plain 404s: mail clients, not people, fetch those)."""
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            message = "This page cannot be used that way. Go back to the start and try again."
        else:
            message = "There is no page at this address. Check the link, or start again."
        note(exc.detail)
        html = theme.render(
            "error.html",
            org=portal.org,
            csrf="",
            user=None,
            certdir_url="/certs",
            message=message,
            error_status=exc.status_code,
        )
        return HTMLResponse(html, status_code=exc.status_code, headers=exc.headers)

    async def service_unavailable(request: Request, exc: Exception) -> Response:
        """The database or a directory did not answer (a restart, a failover, an outage):
        503 and a page that says to try again, not an internal error; nothing was
        half-done (transactions)."""
        if isinstance(exc, DirectoryUnavailable):
            note(f"directory unavailable: {str(exc).splitlines()[0][:200]}")
            message = (
                "The company directory is not answering just now, so you cannot be "
                "recognised. Please try again in a few minutes."
            )
        else:
            note(f"database unavailable: {str(exc).splitlines()[0][:200]}")
            message = "The service is busy for a moment. Please try again in a minute."
        html = theme.render(
            "error.html",
            org=portal.org,
            csrf="",
            user=None,
            certdir_url="/certs",
            message=message,
            error_status=503,
        )
        return HTMLResponse(html, status_code=503, headers={"Retry-After": "30"})

    app.add_exception_handler(404, http_error)
    app.add_exception_handler(405, http_error)
    app.add_exception_handler(StoreError, service_unavailable)
    app.add_exception_handler(DirectoryUnavailable, service_unavailable)
    app.add_exception_handler(AuditUnavailable, service_unavailable)
    # Outermost: one layer logs, counts and times every request (status captured once).
    app.add_middleware(AccessLog, metrics=HttpMetrics(registry))
    if housekeeping:
        threading.Thread(target=portal.prepare, name="warm-up", daemon=True).start()
        Housekeeping(instance, portal=portal).start()
    return app


def create_app_from_env() -> Starlette:
    """Factory for uvicorn worker processes (each opens the instance itself)."""
    return create_app(Path(os.environ[HOME_ENV]), housekeeping=True)


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (a C parser; several times faster than h11 for OCSP)
    with TCP_NODELAY set on every connection.

    uvicorn's multi-worker mode binds the socket itself and asyncio then skips
    TCP_NODELAY, so each keep-alive response waited ~40 ms for a delayed ACK
    (uvicorn issue 3149): OCSP fell from thousands to ~360 responses/s.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def run_server(
    home: Path,
    *,
    listener: socket.socket,
    workers: int = 1,
    log_level: str = "info",
    log_format: str = "plain",
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the instance on `listener` (bound and listening already: see web/listen.py).

    `on_ready` runs once the app is built, just before requests are answered; logging
    (plain lines on stderr, access_log.logging_config) is set up before it."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config_args: dict[str, Any] = {
        "log_config": logging_config(log_level, log_format),
        "log_level": log_level,
        "access_log": False,
        "http": NoDelayHttpToolsProtocol,
        "loop": "uvloop",
    }
    if workers > 1:
        # Each worker process opens the instance itself (PKCS#11 sessions do not survive fork).
        os.environ[HOME_ENV] = str(home.resolve())
        config = uvicorn.Config(
            "mailpki.web.server:create_app_from_env", factory=True, workers=workers, **config_args
        )
        if on_ready is not None:
            on_ready()
        Multiprocess(config, sockets=[listener]).run()
        return
    config = uvicorn.Config(create_app(home, housekeeping=True), **config_args)
    if on_ready is not None:
        on_ready()
    uvicorn.Server(config).run(sockets=[listener])
