"""/healthz, /readyz and /metrics (Prometheus text format, through the official client).

- /healthz: the process answers (no I/O); for a supervisor's liveness probe.
- /readyz: 200 when the node can serve (database, schema, keys, audit), else 503 with
  the failing checks; for a load balancer's health check.
- /metrics: counts from the database (the same on every node) and this node's request
  latencies. Only addresses in `web.metrics_allow` may read it (default: this host).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from mailpki.instance.health import InstanceStatus, Readiness

_NO_STORE = {"Cache-Control": "no-store"}
_STATUS_TTL = 5.0  # seconds a scrape reuses the database counts


@dataclass(frozen=True)
class HealthSource:
    """What the endpoints ask of the instance (blocking calls: run in the thread pool)."""

    readiness: Callable[[], Readiness]
    status: Callable[[], InstanceStatus]
    metrics_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_allow_list(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`127.0.0.1, 10.0.0.0/8` -> networks; ValueError names a bad item."""
    networks = []
    for item in (part.strip() for part in value.split(",")):
        if item:
            networks.append(ipaddress.ip_network(item, strict=False))
    return tuple(networks)


class _StatusCollector(Collector):
    """Turns one cached InstanceStatus into Prometheus metric families."""

    def __init__(self, status: Callable[[], InstanceStatus]) -> None:
        self._status = status
        self._cached: InstanceStatus | None = None
        self._lock = threading.Lock()

    def _current(self) -> InstanceStatus:
        with self._lock:
            if self._cached is None or time.time() - self._cached.taken_at > _STATUS_TTL:
                self._cached = self._status()
            return self._cached

    def collect(self) -> Iterator[Metric]:
        s = self._current()
        yield CounterMetricFamily(
            "mailpki_certificates_issued", "Certificates issued", value=s.certificates_issued
        )
        yield CounterMetricFamily(
            "mailpki_certificates_revoked", "Certificates revoked", value=s.certificates_revoked
        )
        yield GaugeMetricFamily(
            "mailpki_certificates_valid",
            "Certificates neither revoked nor expired",
            value=s.certificates_valid,
        )
        requests = GaugeMetricFamily(
            "mailpki_enrollment_requests",
            "Enrollment requests the rules did not approve, by state",
            labels=["state"],
        )
        for state, count in sorted(s.requests_by_state.items()):
            requests.add_metric([state], count)
        yield requests
        for name, queue, what in (
            ("outbox", s.outbox, "Mails"),
            ("publish", s.publishing, "Directory publish jobs"),
        ):
            yield GaugeMetricFamily(
                f"mailpki_{name}_backlog", f"{what} waiting to be delivered", value=queue.waiting
            )
            yield GaugeMetricFamily(
                f"mailpki_{name}_failing",
                f"{what} waiting after at least one failed attempt",
                value=queue.failing,
            )
        yield GaugeMetricFamily(
            "mailpki_key_pool_size", "Escrowed keys ready in the pool", value=s.key_pool
        )
        crl = GaugeMetricFamily(
            "mailpki_crl_age_seconds", "Seconds since each CRL was signed", labels=["crl"]
        )
        for scope, age in sorted(s.crl_age_seconds.items()):
            crl.add_metric([scope], age)
        yield crl
        yield CounterMetricFamily(
            "mailpki_audit_records", "Records in the audit log", value=s.audit_records
        )
        yield GaugeMetricFamily(
            "mailpki_logons_locked", "Logins locked out after failures", value=s.logons_locked
        )
        if s.recovery_alerts_open is not None:
            recovery = GaugeMetricFamily(
                "mailpki_recovery_requests",
                "Key recovery requests, by state",
                labels=["state"],
            )
            for state, count in sorted(s.recovery_requests_by_state.items()):
                recovery.add_metric([state], count)
            yield recovery
            yield GaugeMetricFamily(
                "mailpki_recovery_alerts_open",
                "Recovery anomaly alerts not yet confirmed",
                value=s.recovery_alerts_open,
            )


class HttpMetrics:
    """The request counter and latency histogram of one app, by route template and
    status (a template, never the raw path: no secret or unbounded label reaches the
    metrics). The access-log middleware (`web.access_log.AccessLog`) records into it, so
    status and timing are captured once per request."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "mailpki_http_requests",
            "HTTP requests answered by this node",
            ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "mailpki_http_request_duration_seconds",
            "Time to answer an HTTP request on this node",
            ["route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )
        # The labelled children, looked up once each: labels() costs microseconds.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def record(self, route: str, status: int, seconds: float) -> None:
        children = self._children.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)


def health_routes(source: HealthSource, registry: CollectorRegistry) -> list[BaseRoute]:
    """The three endpoints; `registry` also holds the HttpMetrics of this app."""
    registry.register(_StatusCollector(source.status))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n", headers=_NO_STORE)

    async def readyz(request: Request) -> Response:
        readiness = await run_in_threadpool(source.readiness)
        body = {
            "ready": readiness.ready,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in readiness.checks},
        }
        return JSONResponse(body, status_code=200 if readiness.ready else 503, headers=_NO_STORE)

    async def metrics(request: Request) -> Response:
        client = request.client.host if request.client else ""
        if not _allowed(client, source.metrics_allow):
            return PlainTextResponse("forbidden\n", status_code=403, headers=_NO_STORE)
        try:
            body = await run_in_threadpool(generate_latest, registry)
        except Exception:
            return PlainTextResponse(
                "metrics unavailable: the database does not answer\n",
                status_code=503,
                headers=_NO_STORE,
            )
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers=_NO_STORE)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def _allowed(
    client: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in network for network in networks)
