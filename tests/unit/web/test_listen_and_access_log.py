"""The listening socket, the public-URL check and the access log's path redaction: the
parts of `mailpki serve` that read outside input (URLs from the config, request paths)."""

from __future__ import annotations

import json
import logging
import re
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from mailpki.web.access_log import (
    ACCESS_LOGGER,
    PLAIN_FORMAT,
    AccessLog,
    JsonFormatter,
    check_level,
    logging_config,
    note,
    public_path,
)
from mailpki.web.listen import ListenError, base_url_problem, listen


def resolver(table: dict[str, set[str]]):  # type: ignore[no-untyped-def]
    def resolve(name: str) -> set[str]:
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[name]

    return resolve


NO_DNS = resolver({})


# -- the public URL ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "host", "port"),
    [
        ("http://127.0.0.1:18092", "127.0.0.1", 18092),
        ("http://localhost:8080/", "127.0.0.1", 8080),
        ("http://127.0.0.1", "0.0.0.0", 80),
        ("https://pki.example.net", "127.0.0.1", 8080),  # elsewhere: a proxy, presumably
    ],
)
def test_urls_that_reach_the_server(base_url: str, host: str, port: int) -> None:
    resolve = resolver({"pki.example.net": {"192.0.2.10"}})
    assert base_url_problem(base_url, host, port, resolve=resolve) is None


def test_an_https_url_on_this_machine_is_a_proxy_not_a_problem() -> None:
    resolve = resolver({"pki.example.net": {"127.0.1.1"}})  # Debian's hostname line
    assert base_url_problem("https://pki.example.net", "127.0.0.1", 8080, resolve=resolve) is None
    problem = base_url_problem("http://pki.example.net", "127.0.0.1", 8080, resolve=resolve)
    assert problem and "port 80," in problem


def test_the_demo_case_a_moved_port_is_a_problem() -> None:
    problem = base_url_problem("http://127.0.0.1:8080", "127.0.0.1", 18092, resolve=NO_DNS)
    assert problem and "port 8080" in problem and "port 18092" in problem


def test_a_name_that_does_not_resolve_is_a_problem() -> None:
    problem = base_url_problem("http://pki.example.com", "127.0.0.1", 8080, resolve=NO_DNS)
    assert problem and "does not resolve" in problem


def test_loopback_url_but_listening_elsewhere_is_a_problem() -> None:
    problem = base_url_problem("http://127.0.0.1:8080", "192.0.2.5", 8080, resolve=NO_DNS)
    assert problem and "listens on 192.0.2.5 only" in problem


@pytest.mark.parametrize(
    "base_url", ["", "pki.example.com", "ftp://pki.example.com", "http://", "http://h:99999"]
)
def test_malformed_urls_are_problems_not_crashes(base_url: str) -> None:
    assert base_url_problem(base_url, "127.0.0.1", 8080, resolve=NO_DNS)


@given(st.text(max_size=80))
def test_any_configured_text_gives_an_answer(base_url: str) -> None:
    result = base_url_problem(base_url, "127.0.0.1", 8080, resolve=NO_DNS)
    assert result is None or isinstance(result, str)


# -- the listening socket ---------------------------------------------------------------


def test_a_port_in_use_is_a_listen_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ListenError, match=rf"127\.0\.0\.1:{port}: the address is already in use"
        ):
            listen("127.0.0.1", port)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_a_bad_port_is_refused(port: int) -> None:
    with pytest.raises(ListenError, match="--port must be between 1 and 65535"):
        listen("127.0.0.1", port)


def test_an_address_not_of_this_machine_is_refused() -> None:
    with pytest.raises(ListenError, match="not an address of this machine"):
        listen("192.0.2.1", 18099)


def test_listen_returns_a_listening_socket() -> None:
    sock = listen("127.0.0.1", _free())
    try:
        client = socket.create_connection(sock.getsockname(), timeout=2)
        client.close()
    finally:
        sock.close()


def _free() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the access log ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "logged"),
    [
        ("/enroll/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde", b"", "/enroll/…"),
        ("/download/secret-handle", b"", "/download/…"),
        ("/fetch/secret-handle", b"", "/fetch/…"),
        ("/certs", b"mail=alice%40example.com", "/certs?mail=…"),
        (
            "/certs/alice@example.com.pem",
            b"serial=ABC&x=1",
            "/certs/alice@example.com.pem?serial=…&x=…",
        ),
        ("/ocsp/MEIwQDA+", b"", "/ocsp/MEIwQDA+"),
        ("/a\nfake line", b"", "/a?fake line"),
        ("/enroll/", b"", "/enroll/"),
    ],
)
def test_public_path_leaves_out_secrets(path: str, query: bytes, logged: str) -> None:
    assert public_path(path, query) == logged


@given(st.text(max_size=300), st.binary(max_size=300))
def test_public_path_is_one_bounded_line(path: str, query: bytes) -> None:
    shown = public_path(path, query)
    assert "\n" not in shown and "\r" not in shown
    assert len(shown) <= 200 + 1 + 10 * 45


def test_log_levels() -> None:
    assert check_level(" INFO ") == "info"
    with pytest.raises(ValueError, match="--log-level must be one of debug, info, warning, error"):
        check_level("loud")
    config = logging_config("warning")
    assert config["loggers"]["mailpki"]["level"] == "WARNING"


def test_note_outside_a_request_is_harmless(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        note("nothing to attach to")
    assert caplog.records == []


def test_an_internal_error_is_logged_at_error_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failure that escapes a handler: the person gets a bare 500, the access line is
    an ERROR that names the exception's type and message, and no secret of the request."""

    async def broken(request: Request) -> Response:
        raise RuntimeError("the certificate store did not answer")

    app = Starlette(routes=[Route("/enroll/{token}", broken)])
    app.add_middleware(AccessLog)  # as `mailpki serve` builds its app
    client = TestClient(app, raise_server_exceptions=False)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        r = client.get("/enroll/s3cret-token?pin=123456", headers={"X-Request-ID": "req-42"})
    assert r.status_code == 500
    assert "certificate store" not in r.text
    [record] = [x for x in caplog.records if x.name == ACCESS_LOGGER]
    assert record.levelno == logging.ERROR
    reason = "RuntimeError: the certificate store did not answer"
    assert re.fullmatch(
        rf"GET /enroll/…\?pin=… 500 \d+\.\d ms testclient req-42 - {reason}",
        record.getMessage(),
    ), record.getMessage()
    # Both log formats carry it: the plain line and the JSON object's own fields.
    plain = logging.Formatter(PLAIN_FORMAT).format(record)
    assert plain.endswith(f"ERROR {ACCESS_LOGGER}: {record.getMessage()}")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "error" and entry["status"] == 500
    assert entry["reasons"] == [reason] and entry["request_id"] == "req-42"
    assert "s3cret" not in caplog.text and "123456" not in caplog.text
