"""The public PKI endpoints: routes, content types, caching headers, hostile input."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from mailpki.web.access_log import ACCESS_LOGGER, PLAIN_FORMAT, AccessLog
from mailpki.web.pki import MAX_OCSP_GET_PATH, MAX_OCSP_REQUEST, _ocsp_successful, create_pki_app

# A successful OCSPResponse starts SEQUENCE (long length) ENUMERATED 0; errors are 5 bytes.
OK_RESPONSE = b"\x30\x82\x01\x00\x0a\x01\x00" + b"\xa0" * 0x100
MALFORMED = bytes.fromhex("30030a0101")
# Bytes whose base64 holds '+', '/' and '=': "+//+fw=="
ODD_REQUEST = bytes([0xFB, 0xFF, 0xFE, 0x7F])


class FakeSource:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.ocsp_answer = OK_RESPONSE
        self.fail = False

    def crl(self, name: str) -> bytes | None:
        self.calls.append(("crl", name))
        if self.fail:
            raise RuntimeError("secret internal detail")
        return {"issuing.crl": b"CRL-FULL", "issuing-3.crl": b"CRL-3"}.get(name)

    def ca_certificate(self, name: str) -> bytes | None:
        self.calls.append(("ca", name))
        if self.fail:
            raise RuntimeError("secret internal detail")
        return {"root.crt": b"ROOT-DER", "chain.pem": b"-----BEGIN CERTIFICATE-----\n"}.get(name)

    def ocsp(self, request_der: bytes) -> bytes:
        self.calls.append(("ocsp", request_der))
        if self.fail:
            raise RuntimeError("secret internal detail")
        return self.ocsp_answer


Env = tuple[TestClient, FakeSource]


@pytest.fixture(params=["inline", "threadpool", "fast-path"])
def env(request: pytest.FixtureRequest) -> Env:
    """Every test runs against each way of calling the source, including the OCSP fast
    path in front of the routing (what `mailpki serve` uses)."""
    source = FakeSource()
    app = create_pki_app(
        source,
        blocking_source=request.param != "inline",
        inline_ocsp=request.param == "fast-path",
    )
    return TestClient(app, raise_server_exceptions=False), source


def test_health(env: Env) -> None:
    client, _ = env
    r = client.get("/health")
    assert r.status_code == 200
    assert r.text == "ok"


def test_crl(env: Env) -> None:
    client, _ = env
    r = client.get("/crl/issuing-3.crl")
    assert r.status_code == 200
    assert r.content == b"CRL-3"
    assert r.headers["content-type"] == "application/pkix-crl"
    assert "max-age=300" in r.headers["cache-control"]
    assert client.get("/crl/issuing-9.crl").status_code == 404
    assert client.head("/crl/issuing.crl").status_code == 200


def test_ca_certificates(env: Env) -> None:
    client, _ = env
    r = client.get("/ca/root.crt")
    assert (r.status_code, r.content) == (200, b"ROOT-DER")
    assert r.headers["content-type"] == "application/pkix-cert"
    r = client.get("/ca/chain.pem")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-pem-file")
    assert client.get("/ca/issuing.crt").status_code == 404
    assert client.get("/ca/root.key").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/crl/..%2F..%2Fetc%2Fpasswd",
        "/crl/%2e%2e",
        "/crl/%2e%2e%2fissuing.crl",
        "/crl/..crl",
        "/crl/a..b.crl",
        "/crl/.crl",
        "/crl/issuing.crl%00",
        "/crl/issuing%00.crl",
        "/crl/issuing.crl.pem",
        "/crl/issuing%2Ecrl%2F",
        "/crl/-x.crl",
        "/crl/x--y.crl",
        "/crl/%C3%A9.crl",
        "/crl/x%0d%0aSet-Cookie:a.crl",
        "/ca/..%2fkeys%2fca.key",
        "/ca/%2e%2e%5croot.crt",
        "/ca/root.crt%00.pem",
        "/crl/" + "a" * 5000 + ".crl",
        "/crl/issuing.crl/",
    ],
)
def test_traversal_and_odd_names_are_404(env: Env, path: str) -> None:
    client, source = env
    r = client.get(path)
    assert r.status_code == 404
    assert source.calls == []  # the source never sees a name that failed the pattern


def _failure_logged(records: list[logging.LogRecord], message: str) -> None:
    """One ERROR line of the PKI app with `message` and the source's exception, as the
    server's log format prints it (the exception's type and message: the reason)."""
    [record] = [r for r in records if r.name == "mailpki.web.pki"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == message
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    printed = logging.Formatter(PLAIN_FORMAT).format(record)
    assert printed.splitlines()[0].endswith(f"ERROR mailpki.web.pki: {message}")
    assert "RuntimeError: secret internal detail" in printed


def test_source_failure_is_a_plain_500(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    client, source = env
    source.fail = True
    # What `mailpki serve` puts in front of the app: the access line of each request.
    logged = TestClient(AccessLog(client.app), raise_server_exceptions=False)
    cases = (
        ("/crl/issuing.crl", "CRL source failed for issuing.crl: RuntimeError"),
        ("/ca/root.crt", "CA certificate source failed for root.crt"),
    )
    for path, message in cases:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            r = logged.get(path)
        assert r.status_code == 500
        assert r.text == "internal error"
        assert "secret" not in r.text and "Traceback" not in r.text
        # The person sees nothing of the reason; the log has it.
        _failure_logged(caplog.records, message)
        [access] = [x for x in caplog.records if x.name == ACCESS_LOGGER]
        assert access.levelno == logging.ERROR
        assert re.fullmatch(
            rf"GET {re.escape(path)} 500 \d+\.\d ms testclient [0-9a-f]{{16}}", access.getMessage()
        )
    # OCSP answers in OCSP terms (internalError), and logs the reason the same way.
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        r = client.post(
            "/ocsp", content=b"REQ", headers={"content-type": "application/ocsp-request"}
        )
    assert r.content == bytes.fromhex("30030a0102")
    _failure_logged(caplog.records, "OCSP source failed")


def test_ocsp_post(env: Env) -> None:
    client, source = env
    r = client.post("/ocsp", content=b"REQ", headers={"content-type": "application/ocsp-request"})
    assert r.status_code == 200
    assert r.content == OK_RESPONSE
    assert r.headers["content-type"] == "application/ocsp-response"
    assert source.calls == [("ocsp", b"REQ")]
    # Parameters on the media type are tolerated; case too.
    r = client.post(
        "/ocsp/", content=b"REQ", headers={"content-type": "Application/OCSP-Request; x=1"}
    )
    assert r.status_code == 200


def test_ocsp_post_wrong_type_is_400(env: Env) -> None:
    client, source = env
    assert client.post("/ocsp", content=b"REQ").status_code == 400
    r = client.post(
        "/ocsp", content=b"REQ", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 400
    assert source.calls == []


def test_ocsp_post_oversize_is_413(env: Env) -> None:
    client, source = env
    headers = {"content-type": "application/ocsp-request"}
    r = client.post("/ocsp", content=b"x" * (MAX_OCSP_REQUEST + 1), headers=headers)
    assert r.status_code == 413

    # Chunked (no Content-Length): counted while reading.
    def chunks() -> Iterator[bytes]:
        for _ in range(80):
            yield b"y" * 1024

    r = client.post("/ocsp", content=chunks(), headers=headers)
    assert r.status_code == 413
    assert source.calls == []
    # Exactly the limit is fine.
    r = client.post("/ocsp", content=b"z" * MAX_OCSP_REQUEST, headers=headers)
    assert r.status_code == 200


def test_ocsp_source_failure_is_internal_error_response(env: Env) -> None:
    client, source = env
    source.fail = True
    r = client.post("/ocsp", content=b"REQ", headers={"content-type": "application/ocsp-request"})
    assert r.status_code == 200
    assert r.content == bytes.fromhex("30030a0102")
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "encode",
    [
        lambda b64: quote(b64, safe=""),  # RFC 6960 A.1: %2B %2F %3D
        lambda b64: b64,  # '+', '=' raw and '/' as a path separator
        lambda b64: b64.rstrip("="),  # padding dropped
        lambda b64: b64.replace("+", "-").replace("/", "_"),  # URL-safe alphabet
        lambda b64: quote(b64, safe="/"),
    ],
    ids=["percent", "raw", "nopad", "urlsafe", "slash-raw"],
)
def test_ocsp_get_encodings(env: Env, encode: Callable[[str], str]) -> None:
    client, source = env
    b64 = base64.b64encode(ODD_REQUEST).decode()
    assert set("+/=") <= set(b64)
    r = client.get("/ocsp/" + encode(b64))
    assert r.status_code == 200, r.text
    assert source.calls == [("ocsp", ODD_REQUEST)]
    assert r.headers["content-type"] == "application/ocsp-response"
    assert "max-age=60" in r.headers["cache-control"]


def test_ocsp_get_leading_slash_in_base64(env: Env) -> None:
    client, source = env
    der = bytes([0xFF, 0xF0, 0x01])  # base64 "//AB"
    r = client.get("/ocsp/" + base64.b64encode(der).decode())
    assert r.status_code == 200
    assert source.calls == [("ocsp", der)]


def test_ocsp_get_error_response_is_not_cacheable(env: Env) -> None:
    client, source = env
    source.ocsp_answer = MALFORMED
    r = client.get("/ocsp/" + base64.b64encode(b"junk").decode())
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/ocsp/", "/ocsp/!!!!", "/ocsp/a", "/ocsp/%00%00"])
def test_ocsp_get_not_base64_is_400(env: Env, path: str) -> None:
    client, source = env
    assert client.get(path).status_code == 400
    assert source.calls == []


def test_ocsp_get_too_long_is_414(env: Env) -> None:
    client, source = env
    assert client.get("/ocsp/" + "A" * (MAX_OCSP_GET_PATH + 4)).status_code == 414
    assert source.calls == []


def test_wrong_methods_and_unknown_paths(env: Env) -> None:
    client, _ = env
    assert client.get("/ocsp").status_code == 405
    assert client.post("/crl/issuing.crl").status_code == 405
    assert client.get("/nothing").status_code == 404


def test_ocsp_successful_sniffing() -> None:
    assert _ocsp_successful(OK_RESPONSE)
    assert _ocsp_successful(b"\x30\x81\x90\x0a\x01\x00")
    assert _ocsp_successful(b"\x30\x10\x0a\x01\x00")
    assert not _ocsp_successful(MALFORMED)
    assert not _ocsp_successful(b"")
    assert not _ocsp_successful(b"\x31\x10\x0a\x01\x00")
