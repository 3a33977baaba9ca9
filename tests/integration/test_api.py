"""The JSON API over real HTTP against `mailpki serve`: the authorization matrix, the
error shape, audit, rate limits, and schemathesis against the API's own OpenAPI document."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki, make_csr

ROLES = ("officer", "operator", "auditor")
# (method, path, body, the roles allowed): the table in docs/api.md
# (test_the_documented_table_is_the_tested_one checks that they agree).
ENDPOINTS: list[tuple[str, str, dict[str, object] | None, set[str]]] = [
    ("GET", "/people?q=fr", None, {"operator", "auditor"}),
    ("GET", "/certificates", None, {"operator", "auditor"}),
    ("GET", "/certificates/expiring", None, {"operator", "auditor"}),
    ("GET", "/certificates/ABCDEF01", None, {"operator", "auditor"}),
    ("GET", "/certificates/ABCDEF01/pem", None, {"operator", "auditor"}),
    ("POST", "/certificates/ABCDEF01/revoke", {"reason": "superseded"}, {"operator"}),
    ("POST", "/certificates/ABCDEF01/renewal-notice", None, {"operator"}),
    ("POST", "/invitations", {"logins": ["nobody-here"]}, {"operator"}),
    ("GET", "/requests", None, {"officer", "auditor"}),
    ("POST", "/requests/999/approve", {"note": "ok"}, {"officer"}),
    ("POST", "/requests/999/reject", {"note": "no"}, {"officer"}),
    ("GET", "/recovery/report", None, {"auditor"}),
    ("GET", "/audit/status", None, {"auditor"}),
]


def call(
    base: str, method: str, path: str, token: str | None, body: object = None
) -> tuple[int, dict[str, str], object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/api/v1{path}", data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw, status, headers = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    content_type = headers.get("content-type", headers.get("Content-Type", ""))
    payload: object = json.loads(raw) if "json" in content_type else raw.decode()
    return status, headers, payload


def token(home: Path, name: str, role: str, *extra: str) -> str:
    result = mailpki("api-token", "create", "--home", home, "--name", name, "--role", role, *extra)
    assert result.code == 0, result.err
    return result.out.strip()


def documented_table() -> dict[tuple[str, str], set[str]]:
    """(method, path template) -> roles, from the authorisation table of docs/api.md."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    table: dict[tuple[str, str], set[str]] = {}
    header: list[str] = []
    for line in page.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == "endpoint":
            header = cells[1:]
            continue
        if not header or set(cells[0]) <= {"-", " "}:
            continue
        roles = {role for role, mark in zip(header, cells[1:], strict=True) if mark == "✓"}
        method, base = "", ""
        for item in re.findall(r"`([^`]+)`", cells[0]):
            words = item.split()
            if words[0] in {"GET", "POST"}:
                method, path = words[0], words[1]
            elif words[0].startswith("/") and method:
                path = base.rsplit("/", 1)[0] + words[0]
            else:
                continue  # a request body
            path = re.split(r"[\[?]", path)[0]
            base = path
            table[(method, path)] = roles
    return table


def test_the_documented_table_is_the_tested_one() -> None:
    tested = {
        (
            method,
            re.sub(r"/999/", "/{id}/", path.replace("ABCDEF01", "{serial}")).split("?")[0],
        ): roles
        for method, path, _body, roles in ENDPOINTS
    }
    assert documented_table() == tested


@pytest.fixture
def people(sqlite_home: Path, tmp_path: Path) -> Path:
    csv = tmp_path / "people.csv"
    csv.write_text(
        "login,mail,name,given_name,surname,site,groups\n"
        "frank,frank@example.com,Frank Miller,Frank,Miller,Berlin,staff\n"
        "greta,greta@example.com,Greta Hansen,Greta,Hansen,Oslo,staff\n"
    )
    assert mailpki("directory", "import", "--home", sqlite_home, csv).code == 0
    return sqlite_home


def test_authorization_matrix(
    people: Path, tmp_path: Path, serve: Callable[[], str], sqlite_home: Path
) -> None:
    tokens: dict[str, str | None] = {role: token(people, f"t-{role}", role) for role in ROLES}
    tokens["anonymous"] = None
    expired = token(people, "t-expired", "operator", "--expires", "1")
    with sqlite3.connect(people / "mailpki.db") as conn:
        conn.execute(
            "UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00.000000' WHERE name = 't-expired'"
        )
    tokens["expired"] = expired
    revoked = token(people, "t-revoked", "auditor")
    assert mailpki("api-token", "revoke", "--home", people, "t-revoked").code == 0
    tokens["revoked"] = revoked
    other = tmp_path / "other"
    assert mailpki(
        "init", "--home", other, "--org", "Other", "--domain", "other.example",
        "--ca-key-type", "p256",
    ).code == 0  # fmt: skip
    tokens["other instance"] = token(other, "t-operator", "operator")
    tokens["garbage"] = "mpk_" + "A" * 43
    base = serve()

    for method, path, body, allowed in ENDPOINTS:
        for who, secret in tokens.items():
            status, headers, payload = call(base, method, path, secret, body)
            if status >= 400:
                assert isinstance(payload, dict) and set(payload) == {"error"}, (who, path, payload)
            if who in allowed:
                assert status not in (401, 403), (who, method, path, status, payload)
            elif who in ROLES:
                assert status == 403, (who, method, path, status, payload)
                assert payload["error"]["code"] == "forbidden"  # type: ignore[index]
            else:
                assert status == 401, (who, method, path, status, payload)
                assert payload["error"]["code"] == "unauthorized"  # type: ignore[index]
                assert headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"


def test_invitations_are_queued_in_the_call_and_sent_by_the_outbox(
    people: Path, serve: Callable[[], str], smtp_server: SMTPServer
) -> None:
    """The API call writes the invitations and their mails and returns; the server's
    outbox (its housekeeping) sends them. A bad row is reported, the others applied."""
    for key, value in (("smtp.host", smtp_server.host), ("smtp.port", str(smtp_server.port))):
        assert mailpki("config", "set", "--home", people, key, value).code == 0
    ops = token(people, "hr-sync", "operator")
    base = serve()
    body = {"logins": ["frank", "nobody-here", "greta", "frank"]}
    status, _, report = call(base, "POST", "/invitations", ops, body)
    assert status == 200, report
    assert report["invited"] == 2 and report["queued"] == 2  # type: ignore[index]
    assert report["errors"] == ["nobody-here: not found in any directory"]  # type: ignore[index]

    deadline = time.monotonic() + 60  # a housekeeping cycle is 15 s
    while len(smtp_server.messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    sent_to = sorted(to for mail in smtp_server.messages for to in mail.rcpt_tos)
    assert sent_to == ["frank@example.com", "greta@example.com"]
    assert all("/enroll/" in mail.text for mail in smtp_server.messages)

    # Asked again: both hold an open link, nobody is invited twice.
    status, _, again = call(base, "POST", "/invitations", ops, {"logins": ["frank", "greta"]})
    assert status == 200 and again["invited"] == 0 and again["queued"] == 0  # type: ignore[index]
    with sqlite3.connect(people / "mailpki.db") as conn:
        actors = conn.execute(
            "SELECT actor FROM audit_records WHERE event = 'invitation.sent'"
        ).fetchall()
    assert actors == [("api:hr-sync",), ("api:hr-sync",)]


def test_revoke_and_invite_are_audited_with_the_token_name(
    people: Path, tmp_path: Path, serve: Callable[[], str]
) -> None:
    result = mailpki(
        "ca", "issue", "--home", people, "--csr", make_csr(tmp_path, "alice"),
        "--email", "alice@example.com", "--name", "Alice Smith", "--out", tmp_path / "a.pem",
    )  # fmt: skip
    assert result.code == 0, result.err
    serial = result.out.split("serial ", 1)[1].split()[0]
    ops = token(people, "hr-sync", "operator")
    base = serve()

    status, _, page = call(base, "GET", "/certificates?email=alice@example.com", ops)
    assert status == 200 and page["total"] == 1  # type: ignore[index]
    status, _, pem = call(base, "GET", f"/certificates/{serial}/pem", ops)
    assert status == 200 and str(pem).startswith("-----BEGIN CERTIFICATE-----")
    status, _, cert = call(
        base, "POST", f"/certificates/{serial}/revoke", ops, {"reason": "keyCompromise"}
    )
    assert status == 200, cert
    assert cert["status"] == "revoked" and cert["reason"] == "keyCompromise"  # type: ignore[index]
    status, _, again = call(base, "POST", f"/certificates/{serial}/revoke", ops, {})
    assert status in (400, 409) and "error" in again  # type: ignore[operator]

    status, _, report = call(
        base, "POST", "/invitations", ops, {"logins": ["frank", "greta", "nobody-here"]}
    )
    assert status == 200, report
    assert report["invited"] == 2  # type: ignore[index]
    assert len(report["errors"]) == 1 and "nobody-here" in report["errors"][0]  # type: ignore[index]

    with sqlite3.connect(people / "mailpki.db") as conn:
        rows = conn.execute(
            "SELECT event, actor FROM audit_records WHERE event IN ('cert.revoked', 'invitation.sent')"
        ).fetchall()
    # One revocation and one invitation per invited person, each by the token's name.
    assert sorted(event for event, _ in rows) == [
        "cert.revoked",
        "invitation.sent",
        "invitation.sent",
    ]
    assert {actor for _, actor in rows} == {"api:hr-sync"}
    assert mailpki("audit", "verify", "--home", people).code == 0


def test_serials_are_answered_zero_padded_and_accepted_either_way(
    people: Path, tmp_path: Path, serve: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A serial with two leading zero digits (an older or imported one: new serials have
    # their top bit set).
    monkeypatch.setattr(
        "mailpki.ca.authority.new_serial", lambda: 0x00A1B2C3D4E5F60718293A4B5C6D7E8F
    )
    padded, stored = "00A1B2C3D4E5F60718293A4B5C6D7E8F", "A1B2C3D4E5F60718293A4B5C6D7E8F"
    result = mailpki(
        "ca", "issue", "--home", people, "--csr", make_csr(tmp_path, "alice"),
        "--email", "alice@example.com", "--name", "Alice Smith", "--out", tmp_path / "a.pem",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert f"serial {padded} " in result.out  # as the CLI prints it
    ops = token(people, "hr-sync", "operator")
    base = serve()

    status, _, page = call(base, "GET", "/certificates?email=alice@example.com", ops)
    assert status == 200 and [c["serial"] for c in page["items"]] == [padded]  # type: ignore[index]
    colons = ":".join(padded[i : i + 2] for i in range(0, len(padded), 2))
    for form in (stored, padded, stored.lower(), f"0x{stored}", colons):
        status, _, cert = call(base, "GET", f"/certificates/{form}", ops)
        assert status == 200 and cert["serial"] == padded, (form, cert)  # type: ignore[index]
        status, _, pem = call(base, "GET", f"/certificates/{form}/pem", ops)
        assert status == 200 and str(pem).startswith("-----BEGIN CERTIFICATE-----"), form
    status, _, cert = call(
        base, "POST", f"/certificates/{stored}/revoke", ops, {"reason": "superseded"}
    )
    assert status == 200 and cert["serial"] == padded, cert  # type: ignore[index]
    assert cert["status"] == "revoked"  # type: ignore[index]
    status, _, again = call(base, "POST", f"/certificates/{padded}/revoke", ops, {})
    assert status in (400, 409) and "error" in again  # type: ignore[operator]

    # The document says what the field holds and what a path accepts.
    status, _, document = call(base, "GET", "/openapi.json", None)
    assert status == 200
    described = json.dumps(document)
    assert "zero-padded to 32 digits, as `mailpki certs list` prints it" in described
    assert "with or without the leading zeros" in described


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"logins": []}, 422),
        ({"logins": ["  "]}, 422),
        ({"logins": ["x" * 400]}, 422),
        ({"logins": "frank"}, 422),
        ({"logins": ["frank"], "extra": 1}, 422),
        ({"reason": "because"}, 422),
    ],
)
def test_bad_bodies_get_the_stable_error_shape(
    people: Path, serve: Callable[[], str], body: dict[str, object], code: int
) -> None:
    ops = token(people, "ops", "operator")
    base = serve()
    status, _, payload = call(base, "POST", "/invitations", ops, body)
    assert status == code
    assert set(payload) == {"error"}  # type: ignore[arg-type]
    assert set(payload["error"]) == {"code", "message"}  # type: ignore[index]


def test_calls_are_rate_limited_per_token(people: Path, serve: Callable[[], str]) -> None:
    assert mailpki("config", "set", "--home", people, "api.rate_per_minute", "3").code == 0
    first, second = token(people, "a", "auditor"), token(people, "b", "auditor")
    base = serve()
    statuses = [call(base, "GET", "/requests", first)[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    status, headers, payload = call(base, "GET", "/requests", first)
    assert headers.get("retry-after", headers.get("Retry-After")) == "60"
    assert status == 429 and payload["error"]["code"] == "rate_limited"  # type: ignore[index]
    assert call(base, "GET", "/requests", second)[0] == 200  # another token has its own


def _schemathesis() -> str:
    found = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    assert Path(found).exists(), "schemathesis is a test dependency"
    return found


@pytest.mark.parametrize("role", ROLES)
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    people: Path, serve: Callable[[], str], role: str
) -> None:
    secret = token(people, f"fuzz-{role}", role)
    base = serve()
    proc = subprocess.run(
        [
            _schemathesis(), "run", f"{base}/api/v1/openapi.json",
            "-H", f"Authorization: Bearer {secret}",
            "--checks", "not_a_server_error,status_code_conformance,"
            "content_type_conformance,response_schema_conformance",
            "--max-examples", "10", "--generation-deterministic",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
