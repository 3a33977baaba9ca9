"""The Key Recovery Service apart from the CA: its keys in SoftHSM2, served over HTTP.

One instance (SQLite) and one recovery service whose transport and audit keys live in
the session's SoftHSM2 token under their own label prefix; the service runs as a real
`mailpki recovery-service serve` process and the instance reaches it only through
`recovery connect` and HTTP. A second service keeps its store in PostgreSQL.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mailpki.instance.instance import Instance
from mailpki.instance.recovery_admin import AdminCredential, signed_message
from mailpki.keystore.pkcs11 import PKCS11KeyStore
from mailpki.recovery.service import RecoveryService
from tests.fixtures.softhsm import SoftHSMToken
from tests.integration.cli_helpers import Result, mailpki

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[2] / "src"
PASSWORD = "a long test password for the PKCS12 files"
ALERT_CONTACT = "security@example.com"
ADMINS = {
    "admin": ("recovery-admin", "Ada Admin", "ada@example.com"),
    "officer1": ("recovery-officer", "Otto Officer", "otto@example.com"),
    "officer2": ("recovery-officer", "Olga Officer", "olga@example.com"),
    "auditor": ("auditor", "Audrey Auditor", "audrey@example.com"),
}


def _ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}\nstdout: {result.out}\nstderr: {result.err}"
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _init_instance(home: Path) -> None:
    _ok(
        mailpki(
            "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
            "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
        )
    )  # fmt: skip


def _chain(home: Path, work: Path) -> Path:
    path = work / "chain.pem"
    path.write_text(_ok(mailpki("ca", "chain", "--home", home)).out)
    return path


def _token_args(token: SoftHSMToken) -> list[str | Path]:
    return [
        "--pkcs11-module", token.module, "--pkcs11-token", token.label,
        "--pkcs11-pin-file", token.pin_file,
    ]  # fmt: skip


def _service_id(init_output: str) -> str:
    found = re.search(r"service id \(pin it on the CA side\): ([0-9a-f]{64})", init_output)
    assert found, init_output
    return found.group(1)


@contextmanager
def _serve(krs: Path, log: Path) -> Iterator[str]:
    """`mailpki recovery-service serve` as a separate process on a free port."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailpki", "recovery-service", "serve", "--home", str(krs),
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    pytest.fail(
                        f"the recovery service exited {proc.returncode}:\n{log.read_text()}"
                    )
                try:
                    with urllib.request.urlopen(f"{url}/v1/info", timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the recovery service did not start:\n{log.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)


def _http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


def _add_admins(home: Path, work: Path, names: tuple[str, ...]) -> dict[str, Path]:
    files = {}
    for name in names:
        role, full_name, mail = ADMINS[name]
        out = work / f"{name}.p12"
        _ok(
            mailpki(
                "admin", "add", "--home", home, "--name", full_name, "--email", mail,
                "--role", role, "--out", out, "--password-file", work / "pw",
            )
        )  # fmt: skip
        files[name] = out
    return files


def _enroll(home: Path, work: Path, user: str) -> Path:
    out = work / f"{user}.p12"
    _ok(
        mailpki(
            "enroll", "--home", home, "--email", f"{user}@example.com",
            "--name", f"{user.title()} Smith", "--out", out, "--password-file", work / "pw",
        )
    )  # fmt: skip
    return out


def _private_der(p12: Path) -> bytes:
    key, _, _ = pkcs12.load_key_and_certificates(p12.read_bytes(), PASSWORD.encode())
    assert key is not None
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _signed(admins: dict[str, Path], name: str) -> list[str | Path]:
    """--p12 and --password-file of one of the admins."""
    return ["--p12", admins[name], "--password-file", admins[name].parent / "pw"]


def _request_and_approve(home: Path, admins: dict[str, Path], user: str) -> str:
    result = _ok(
        mailpki(
            "recovery", "request", "--home", home, "--email", f"{user}@example.com",
            *_signed(admins, "admin"), "--reason", "left the company",
        )
    )  # fmt: skip
    request_id = result.out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), result.out
    for officer, expected in (("officer1", "1 of 2"), ("officer2", "2 of 2")):
        approved = _ok(
            mailpki("recovery", "approve", request_id, "--home", home, *_signed(admins, officer))
        )
        assert expected in approved.out
    return request_id


def _fetch(home: Path, admins: dict[str, Path], request_id: str, out: Path) -> Result:
    return mailpki(
        "recovery", "fetch", request_id, "--home", home, *_signed(admins, "admin"),
        "--out", out, "--new-password-file", admins["admin"].parent / "pw",
    )  # fmt: skip


def _escrow_target(home: Path, user: str) -> tuple[str, str]:
    instance = Instance.open(home)
    try:
        _, block = instance.key_manager.block_for(email=f"{user}@example.com")
        return block.krs_key_id, block.oaep_hash
    finally:
        instance.close()


# -- the service in the token, served over HTTP -------------------------------------------


@dataclass(frozen=True)
class Apart:
    home: Path
    krs: Path
    work: Path
    url: str
    service_id: str
    prefix: str
    embedded_id: str
    token: SoftHSMToken


@pytest.fixture(scope="module")
def apart(softhsm_token: SoftHSMToken, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apart]:
    work = tmp_path_factory.mktemp("apart")
    (work / "pw").write_text(PASSWORD + "\n")
    home, krs = work / "corp", work / "krs"
    _init_instance(home)
    embedded_id = _ok(mailpki("config", "get", "recovery.service_id", "--home", home)).out.strip()
    prefix = f"apart{secrets.token_hex(3)}"
    result = _ok(
        mailpki(
            "recovery-service", "init", "--home", krs, "--trust", _chain(home, work),
            *_token_args(softhsm_token), "--oaep-hash", "sha1", "--label-prefix", prefix,
            "--alert-contact", ALERT_CONTACT,
        )
    )  # fmt: skip
    assert "PKCS#11 token" in result.out
    # Every recovery is unusual while there is no history: the first one raises an
    # alert that holds it until the second contact confirms (the confirm endpoint).
    _ok(mailpki("recovery-service", "config", "set", "alerts.average_minimum", "1", "--home", krs))
    with _serve(krs, work / "krs-serve.log") as url:
        yield Apart(
            home=home,
            krs=krs,
            work=work,
            url=url,
            service_id=_service_id(result.out),
            prefix=prefix,
            embedded_id=embedded_id,
            token=softhsm_token,
        )


def _pinned(home: Path) -> tuple[bytes, str, str, str]:
    """What `recovery connect` pins: the key file, service id, URL and OAEP hash."""

    def get(key: str) -> str:
        return _ok(mailpki("config", "get", key, "--home", home)).out.strip()

    pem = (home / "recovery" / "transport.pub.pem").read_bytes()
    return pem, get("recovery.service_id"), get("recovery.url"), get("recovery.oaep_hash")


@pytest.fixture(scope="module")
def connected(apart: Apart) -> Apart:
    """The instance after `recovery connect` to the service in the token."""
    result = _ok(
        mailpki(
            "recovery", "connect", "--home", apart.home, "--url", apart.url,
            "--service-id", apart.service_id.upper(),
        )
    )  # fmt: skip
    assert f"new keys are escrowed to service {apart.service_id[:16]}" in result.out
    pem, service_id, url, oaep_hash = _pinned(apart.home)
    assert (service_id, url, oaep_hash) == (apart.service_id, apart.url, "sha1")
    assert pem == (apart.krs / "transport.pub.pem").read_bytes()
    return apart


@pytest.fixture(scope="module")
def admins(connected: Apart) -> dict[str, Path]:
    return _add_admins(connected.home, connected.work, tuple(ADMINS))


def test_connect_refuses_a_wrong_service_id(apart: Apart) -> None:
    before = _pinned(apart.home)
    wrong = "ab" * 32
    result = mailpki(
        "recovery", "connect", "--home", apart.home, "--url", apart.url, "--service-id", wrong
    )
    assert result.code != 0
    assert f"has id {apart.service_id}, not the {wrong} you gave" in result.err
    assert "not pinning it" in result.err
    assert _pinned(apart.home) == before
    if not before[2]:  # not connected yet: still the embedded service
        assert before[1] == apart.embedded_id
    # An unreachable service is refused too, and pins nothing.
    result = mailpki(
        "recovery", "connect", "--home", apart.home, "--url", "http://127.0.0.1:9",
        "--service-id", apart.service_id,
    )  # fmt: skip
    assert result.code != 0 and "cannot reach the recovery service" in result.err
    assert _pinned(apart.home) == before


def test_init_with_sha256_in_softhsm_fails_and_leaves_nothing(
    softhsm_token: SoftHSMToken, tmp_path: Path
) -> None:
    home, krs = tmp_path / "corp", tmp_path / "krs"
    _init_instance(home)
    prefix = f"bad{secrets.token_hex(3)}"
    result = mailpki(
        "recovery-service", "init", "--home", krs, "--trust", _chain(home, tmp_path),
        *_token_args(softhsm_token), "--oaep-hash", "sha256", "--label-prefix", prefix,
    )  # fmt: skip
    assert result.code != 0
    assert "RSA-OAEP/sha256" in result.err
    assert "supports only SHA-1: set the OAEP hash to sha1" in result.err
    assert not krs.exists()
    with PKCS11KeyStore(softhsm_token.module, softhsm_token.label, softhsm_token.pin.encode()) as s:
        assert not s.exists(f"{prefix}-transport")
        assert not s.exists(f"{prefix}-audit")
    # A bad prefix is refused before anything is made.
    bad = mailpki(
        "recovery-service", "init", "--home", krs, "--trust", tmp_path / "chain.pem",
        *_token_args(softhsm_token), "--oaep-hash", "sha1", "--label-prefix", "Not OK!",
    )  # fmt: skip
    assert bad.code != 0 and "keys.label_prefix" in bad.err
    assert not krs.exists()


def test_transport_key_lives_in_the_token(apart: Apart) -> None:
    token = apart.token
    with PKCS11KeyStore(token.module, token.label, token.pin.encode()) as store:
        attributes = store.key_attributes(f"{apart.prefix}-transport")
        audit = store.key_attributes(f"{apart.prefix}-audit")
        transport = store.load(f"{apart.prefix}-transport")
    assert attributes["sensitive"] and attributes["always_sensitive"]
    assert not attributes["extractable"] and attributes["never_extractable"]
    assert attributes["local"] and attributes["private"]
    assert attributes["decrypt"] and attributes["unwrap"] and not attributes["sign"]
    assert audit["sign"] and not audit["decrypt"] and not audit["extractable"]
    # What the service publishes is that key's public half. The only private key on disk
    # is the ML-KEM-768 half of the hybrid wrap, which the token cannot hold: an encrypted
    # file (sealed under the PIN) that opens nothing without the RSA key in the token.
    published = serialization.load_pem_public_key((apart.krs / "transport.pub.pem").read_bytes())
    assert published == transport.public_key()
    on_disk = sorted(p.name for p in (apart.krs / "keys").iterdir())
    assert on_disk == [f"{apart.prefix}-transport-mlkem.mlkem.json"], on_disk
    sealed = (apart.krs / "keys" / on_disk[0]).read_text()
    assert '"sealed_seed"' in sealed and '"kdf": "pbkdf2-hmac-sha256"' in sealed
    config = _ok(mailpki("recovery-service", "config", "show", "--home", apart.krs)).out
    assert "keys.backend = 'pkcs11'" in config
    assert f"keys.label_prefix = '{apart.prefix}'" in config
    assert "transport.oaep_hash = 'sha1'" in config
    _, info = _http("GET", f"{apart.url}/v1/info")
    assert info["service_id"] == apart.service_id and info["oaep_hash"] == "sha1"


def test_recovery_over_http_unwraps_in_the_token(connected: Apart, admins: dict[str, Path]) -> None:
    home, work = connected.home, connected.work
    original = _enroll(home, work, "alice")
    # The new key was escrowed to the remote service, for its OAEP hash.
    assert _escrow_target(home, "alice") == (connected.service_id, "sha1")

    request_id = _request_and_approve(home, admins, "alice")
    # The service can answer only over HTTP: the instance has no local service to ask.
    listed = mailpki("recovery", "list", "--home", home)
    assert listed.code != 0
    assert f"the recovery service runs apart ({connected.url})" in listed.err
    assert "--p12" in listed.err
    reported = mailpki("recovery", "report", "--home", home)
    assert reported.code != 0 and "runs apart" in reported.err

    # The first recovery crosses the (lowered) average rule: held until confirmed.
    out = work / "alice-recovered.p12"
    held = _fetch(home, admins, request_id, out)
    assert held.code != 0 and not out.exists()
    found = re.search(r"raised alert (\d+) \(.*\); it is held until (\S+) confirms it", held.err)
    assert found, held.err
    alert_id, contact = int(found.group(1)), found.group(2)
    assert contact == ALERT_CONTACT
    mails = sorted((connected.krs / "outbox").glob("*.eml"))
    assert len(mails) == 1
    mail = email.message_from_bytes(mails[0].read_bytes(), policy=email.policy.default)
    assert mail["To"] == ALERT_CONTACT
    text = mail.get_body()
    assert text is not None
    token = re.search(rf"confirm --home \S+ {alert_id} --token (\S+)", text.get_content())
    assert token, text.get_content()
    confirm = f"{connected.url}/v1/alerts/{alert_id}/confirm"
    status, body = _http("POST", confirm, json.dumps({"token": "wrong-" + token.group(1)}).encode())
    assert status == 403 and "wrong confirmation token" in body["error"]
    status, body = _http("POST", confirm, b"{not json")
    assert status == 400 and "JSON" in body["error"]
    status, body = _http("POST", f"{connected.url}/v1/alerts/999999/confirm", b'{"token": "x"}')
    assert status == 404
    status, body = _http("POST", confirm, json.dumps({"token": token.group(1)}).encode())
    assert status == 200 and body == {"alert": alert_id, "confirmed": True}

    fetched = _ok(_fetch(home, admins, request_id, out))
    assert "recovered the key of alice@example.com" in fetched.out
    assert _private_der(out) == _private_der(original)
    # Fetched once only.
    again = _fetch(home, admins, request_id, work / "again.p12")
    assert again.code != 0 and "already fetched" in again.err

    # The unwrap could only have happened in the token: the key cannot leave it.
    token_store = connected.token
    with PKCS11KeyStore(token_store.module, token_store.label, token_store.pin.encode()) as s:
        assert s.key_attributes(f"{connected.prefix}-transport")["never_extractable"]

    # An auditor's signed queries work over HTTP.
    auditor = _signed(admins, "auditor")
    rows = json.loads(_ok(mailpki("recovery", "list", "--home", home, "--json", *auditor)).out)
    assert [(r["request_id"], r["state"]) for r in rows] == [(request_id, "recovered")]
    assert rows[0]["approved_by"] == ["otto@example.com", "olga@example.com"]
    report = json.loads(
        _ok(
            mailpki(
                "recovery", "report", "--home", home, "--json", "--admin", "ada@example.com",
                *auditor,
            )
        ).out
    )  # fmt: skip
    assert [(r["target_email"], r["recovered_by"]) for r in report] == [
        ("alice@example.com", "ada@example.com")
    ]

    alerts = json.loads(
        _ok(mailpki("recovery-service", "alerts", "--home", connected.krs, "--json")).out
    )
    assert alerts[0]["id"] == alert_id and alerts[0]["confirmed_at"]
    verified = _ok(mailpki("recovery-service", "verify", "--home", connected.krs))
    assert "recovery audit log intact" in verified.out
    assert _ok(mailpki("audit", "verify", "--home", home)).code == 0


def test_http_abuse_is_refused(connected: Apart, admins: dict[str, Path]) -> None:
    url = connected.url
    messages = f"{url}/v1/messages"
    status, body = _http("POST", messages, b"this is not a signed message")
    assert status in (400, 403) and isinstance(body, dict) and body["error"]
    status, body = _http("POST", messages, b"")
    assert status in (400, 403) and body["error"]
    for oversized in (_oversized_declared, _oversized_chunked):
        status, body = oversized(url)
        assert status == 400 and "too large" in body["error"]
    status, _ = _http("GET", messages)
    assert status == 405
    status, _ = _http("POST", f"{url}/v1/info", b"x")
    assert status == 405
    status, _ = _http("GET", f"{url}/v1/nothing-here")
    assert status == 404

    # A signed message is good once: the same bytes again are a replay.
    auditor = AdminCredential.from_pkcs12(admins["auditor"].read_bytes(), PASSWORD.encode())
    instance = Instance.open(connected.home)
    try:
        message = signed_message(instance, auditor, "list", {})
        # An auditor may not approve a recovery.
        forbidden = signed_message(instance, auditor, "approve", {"request_id": "0" * 32})
    finally:
        instance.close()
    headers = {"Content-Type": "application/pkcs7-mime"}
    status, body = _http("POST", messages, message, headers)
    assert status == 200 and "requests" in body
    status, body = _http("POST", messages, message, headers)
    assert status == 403 and body["error"]
    status, body = _http("POST", messages, forbidden, headers)
    assert status == 403 and "role" in body["error"]
    # A message whose signature is broken (one byte changed in the middle).
    broken = bytearray(message)
    broken[len(broken) // 2] ^= 0x01
    status, body = _http("POST", messages, bytes(broken), headers)
    assert status in (400, 403) and body["error"]
    # The service is still up and its log intact after all that.
    assert _http("GET", f"{url}/v1/info")[0] == 200
    _ok(mailpki("recovery-service", "verify", "--home", connected.krs))


MAX_BODY = 512 * 1024


def _raw_post(url: str, headers: list[str], parts: list[bytes]) -> tuple[int, Any]:
    """POST /v1/messages over a bare socket: send only `parts` as the body, then read
    the answer. The server answers an oversized body before reading it all; a client
    that kept sending would hit a closed socket, so these bodies stop where the server
    has seen enough."""
    host, port = url.removeprefix("http://").split(":")
    head = ["POST /v1/messages HTTP/1.1", f"Host: {host}:{port}", "Connection: close", *headers]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        for part in parts:
            sock.sendall(part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body)


def _oversized_declared(url: str) -> tuple[int, Any]:
    """Content-Length over the limit: refused before any of the body is read."""
    return _raw_post(url, [f"Content-Length: {MAX_BODY + 1}"], [])


def _oversized_chunked(url: str) -> tuple[int, Any]:
    """No Content-Length, a chunked body that grows past the limit: refused while read."""
    chunk = b"\x30" * (64 * 1024)
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY // len(chunk))
    parts.append(b"400\r\n" + b"\x30" * 0x400 + b"\r\n")  # 1 KB more: over the limit
    return _raw_post(url, ["Transfer-Encoding: chunked"], parts)


# -- the service's store in PostgreSQL ------------------------------------------------------


def test_recovery_with_the_service_store_in_postgresql(
    softhsm_token: SoftHSMToken, postgres_database: str, tmp_path: Path
) -> None:
    work = tmp_path
    (work / "pw").write_text(PASSWORD + "\n")
    home, krs = work / "corp", work / "krs"
    _init_instance(home)
    prefix = f"pg{secrets.token_hex(3)}"
    result = _ok(
        mailpki(
            "recovery-service", "init", "--home", krs, "--trust", _chain(home, work),
            *_token_args(softhsm_token), "--oaep-hash", "sha1", "--label-prefix", prefix,
            "--database", postgres_database,
        )
    )  # fmt: skip
    service_id = _service_id(result.out)
    assert "krs.db" not in {p.name for p in krs.iterdir()}
    with _serve(krs, work / "krs-serve.log") as url:
        _ok(
            mailpki("recovery", "connect", "--home", home, "--url", url, "--service-id", service_id)
        )
        admins = _add_admins(home, work, ("admin", "officer1", "officer2"))
        original = _enroll(home, work, "bob")
        assert _escrow_target(home, "bob") == (service_id, "sha1")
        request_id = _request_and_approve(home, admins, "bob")
        out = work / "bob-recovered.p12"
        _ok(_fetch(home, admins, request_id, out))
    assert _private_der(out) == _private_der(original)
    # The requests and the service's log are in PostgreSQL.
    service = RecoveryService.open(krs)
    try:
        assert service.config.get("database.url") == postgres_database
        assert [(r["request_id"], r["state"]) for r in service.requests()] == [
            (request_id, "recovered")
        ]
        report = service.verify_audit()
        assert report.ok, report.problems
    finally:
        service.close()
