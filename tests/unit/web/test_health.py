"""The /metrics allow list and the request metrics (recorded by the access-log
middleware), without a server."""

from __future__ import annotations

import ipaddress

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from mailpki.web.access_log import AccessLog
from mailpki.web.health import HttpMetrics, _allowed, parse_allow_list


def test_allow_list_parses_addresses_and_networks() -> None:
    networks = parse_allow_list(" 127.0.0.1 , 10.0.0.0/8,::1 ,")
    assert ipaddress.ip_network("10.0.0.0/8") in networks
    assert _allowed("10.1.2.3", networks)
    assert _allowed("::1", networks)
    assert not _allowed("192.168.1.1", networks)
    assert not _allowed("not-an-address", networks)
    assert not _allowed("", networks)
    with pytest.raises(ValueError):
        parse_allow_list("10.0.0.0/8, example.com")


def test_request_metrics_label_by_route_template_never_by_raw_path() -> None:
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x")

    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/enroll/{token}", echo)])
    app.add_middleware(AccessLog, metrics=HttpMetrics(registry))
    client = TestClient(app)
    assert client.get("/enroll/SECRET-TOKEN-123").status_code == 200
    assert client.get("/nowhere/else").status_code == 404
    text = generate_latest(registry).decode()
    assert 'route="/enroll/{token}",status="200"' in text
    assert 'route="unmatched",status="404"' in text
    assert "SECRET-TOKEN-123" not in text
    assert "nowhere" not in text


def test_one_layer_logs_counts_and_times_each_request_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x")

    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/items/{name}", echo)])
    app.add_middleware(AccessLog, metrics=HttpMetrics(registry))
    client = TestClient(app)
    with caplog.at_level("INFO", logger="mailpki.access"):
        for _ in range(3):
            response = client.get("/items/a", headers={"X-Request-ID": "abc-1"})
            assert response.headers["x-request-id"] == "abc-1"
    lines = [r.getMessage() for r in caplog.records if r.name == "mailpki.access"]
    assert len(lines) == 3 and all(" 200 " in line and "abc-1" in line for line in lines)
    text = generate_latest(registry).decode()
    assert 'mailpki_http_requests_total{route="/items/{name}",status="200"} 3.0' in text
    assert 'mailpki_http_request_duration_seconds_count{route="/items/{name}"} 3.0' in text
