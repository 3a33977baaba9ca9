"""Who may open which console page: every route × anonymous, person, officer, operator,
auditor, over real HTTP against `mailpki serve` and a real slapd (directory groups give
the roles). The table is the one in docs/console.md. And CSRF: every console form
without a valid token is refused and changes nothing."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.console_users import GROUP_SETTINGS, ConsoleAccount
from tests.fixtures.slapd import SlapdServer
from tests.integration.cli_helpers import mailpki, make_csr

pytestmark = pytest.mark.integration

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
NO_SERIAL = "0A0B0C0D0E0F1011"
# A serial with two leading zero digits (an older or imported one: new serials have their
# top bit set), as the CLI prints it and as it is stored.
LEADING_ZERO = 0x00A1B2C3D4E5F60718293A4B5C6D7E8F
PADDED, STORED = "00A1B2C3D4E5F60718293A4B5C6D7E8F", "A1B2C3D4E5F60718293A4B5C6D7E8F"
ROLES = ("anonymous", "person", "officer", "operator", "auditor")
# route -> expected answer per role, in ROLES order. "logon": the console's logon page;
# a number: that status. 404 for an allowed role means it passed authorisation and
# found nothing (a made-up serial).
GET_MATRIX: dict[str, tuple[Any, ...]] = {
    "/admin": ("logon", 403, 200, 200, 200),
    "/admin/people?q=bob": ("logon", 403, 403, 200, 200),
    "/admin/people/bob": ("logon", 403, 403, 200, 200),
    f"/admin/certificates/{NO_SERIAL}": ("logon", 403, 403, 404, 404),
    f"/admin/certificates/{NO_SERIAL}/revoke?reason=superseded": ("logon", 403, 403, 404, 403),
    "/admin/invitations": ("logon", 403, 403, 200, 403),
    "/admin/requests": ("logon", 403, 200, 403, 200),
    "/admin/recovery": ("logon", 403, 403, 403, 200),
    "/admin/audit": ("logon", 403, 403, 403, 200),
    "/admin/settings": ("logon", 403, 403, 403, 200),
}
# (path, form fields, multipart?) -> expected status per role. 303: done (a redirect
# with the outcome), 200: the outcome page, 404: allowed but nothing of that number.
POSTS: dict[str, tuple[dict[str, str], bool, tuple[int, ...]]] = {
    "/admin/requests/999999": ({"decision": "approve"}, False, (403, 403, 303, 403, 403)),
    f"/admin/certificates/{NO_SERIAL}/revoke": (
        {"reason": "superseded", "confirm": "yes"},
        False,
        (403, 403, 403, 404, 403),
    ),
    "/admin/invitations": ({"logins": "nobody-here"}, False, (403, 403, 403, 200, 403)),
    "/admin/invitations/csv": ({}, True, (403, 403, 403, 200, 403)),
}


def ok(result: Any) -> Any:
    assert result.code == 0, f"exit {result.code}\n{result.out}\n{result.err}"
    return result


@pytest.fixture
def console_url(
    sqlite_home: Path, serve: Any, openldap_server: SlapdServer, console_accounts: Any
) -> str:
    for key, value in GROUP_SETTINGS:
        ok(mailpki("config", "set", "--home", sqlite_home, key, value))
    ok(
        mailpki(
            "directory", "add", "corp", "--home", sqlite_home, "--url", openldap_server.ldaps_url,
            "--base-dn", openldap_server.base_dn, "--bind-dn", openldap_server.bind_dn,
            "--bind-password-file", openldap_server.bind_password_file, "--flavour", "openldap",
            "--domain", "example.com", "--ca-file", openldap_server.ca_file,
        )
    )  # fmt: skip
    return str(serve())


def logged_on(url: str, account: ConsoleAccount | None) -> httpx.Client:
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
    if account is None:
        return client
    page = client.get("/admin")
    csrf = CSRF_RE.search(page.text)
    assert csrf is not None, page.text
    response = client.post(
        "/logon",
        data={"csrf": csrf.group(1), "method": "directory", "login": account.login,
              "secret": account.password, "next": "/admin"},
    )  # fmt: skip
    assert response.status_code == 303, response.text
    return client


def clients(url: str, accounts: dict[str, ConsoleAccount]) -> dict[str, httpx.Client]:
    return {role: logged_on(url, accounts.get(role)) for role in ROLES}


def csrf_of(client: httpx.Client) -> str:
    found = CSRF_RE.search(client.get("/admin").text)
    return found.group(1) if found else ""


def post(client: httpx.Client, path: str, fields: dict[str, str], multipart: bool, csrf: str):  # type: ignore[no-untyped-def]
    data = {**fields, "csrf": csrf} if csrf else dict(fields)
    if multipart:
        files = {"file": ("people.csv", b"login\nnobody-here\n", "text/csv")}
        return client.post(path, data=data, files=files)
    return client.post(path, data=data)


def test_every_console_route_answers_each_role_as_the_table_says(
    console_url: str, console_accounts: dict[str, ConsoleAccount]
) -> None:
    by_role = clients(console_url, console_accounts)
    failures = []
    for path, expected in GET_MATRIX.items():
        for role, wanted in zip(ROLES, expected, strict=True):
            response = by_role[role].get(path)
            if wanted == "logon":
                good = response.status_code == 200 and 'action="/logon"' in response.text
            else:
                good = response.status_code == wanted
            if good and wanted == 403:
                good = "operator console" in response.text.lower()
            if not good:
                failures.append(f"GET {path} as {role}: {response.status_code}, wanted {wanted}")
    for path, (fields, multipart, expected) in POSTS.items():
        for role, wanted in zip(ROLES, expected, strict=True):
            client = by_role[role]
            response = post(client, path, fields, multipart, csrf_of(client))
            if response.status_code != wanted:
                failures.append(f"POST {path} as {role}: {response.status_code}, wanted {wanted}")
    assert not failures, "\n".join(failures)


def test_a_person_gets_a_page_that_says_why(
    console_url: str, console_accounts: dict[str, ConsoleAccount]
) -> None:
    person = logged_on(console_url, console_accounts["person"])
    response = person.get("/admin")
    assert response.status_code == 403
    assert "for certificate officers, operators and auditors" in response.text
    assert "script-src" not in response.headers["content-security-policy"] or (
        "'unsafe-inline'" not in response.headers["content-security-policy"]
    )


@pytest.mark.parametrize("case", ["missing", "wrong", "another session's"])
def test_every_console_form_refuses_a_bad_csrf_token_and_changes_nothing(
    console_url: str, console_accounts: dict[str, ConsoleAccount], sqlite_home: Path, case: str
) -> None:
    allowed = {
        "/admin/requests/999999": "officer",
        f"/admin/certificates/{NO_SERIAL}/revoke": "operator",
        "/admin/invitations": "operator",
        "/admin/invitations/csv": "operator",
    }
    other = logged_on(console_url, console_accounts["auditor"])
    tokens = {"missing": "", "wrong": "A" * 43, "another session's": csrf_of(other)}
    for path, role in allowed.items():
        client = logged_on(console_url, console_accounts[role])
        fields, multipart, _ = POSTS[path]
        response = post(client, path, fields, multipart, tokens[case])
        assert response.status_code == 403, (path, response.status_code)
        assert "did not come from this site" in response.text
    invited = sqlite_home / "outbox"
    assert not invited.exists() or not any(invited.iterdir())
    assert console_actions(sqlite_home) == []


def console_actions(home: Path) -> list[tuple[str, str]]:
    """Audit records of anything done from the console (logons are not actions)."""
    with sqlite3.connect(home / "mailpki.db") as conn:
        return conn.execute(
            "SELECT event, actor FROM audit_records WHERE actor LIKE 'console:%'"
        ).fetchall()


def test_serials_are_shown_zero_padded_as_the_cli_prints_them(
    console_url: str,
    console_accounts: dict[str, ConsoleAccount],
    sqlite_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("mailpki.ca.authority.new_serial", lambda: LEADING_ZERO)
    issued = ok(
        mailpki(
            "ca", "issue", "--home", sqlite_home, "--csr", make_csr(tmp_path, "alice"),
            "--email", "alice@example.com", "--name", "Alice Liddell", "--out", tmp_path / "a.pem",
        )
    )  # fmt: skip
    assert f"serial {PADDED} " in issued.out
    listed = ok(mailpki("certs", "list", "--home", sqlite_home)).out
    assert PADDED in listed
    unpadded = (f"<code>{STORED}</code>", f"/admin/certificates/{STORED}", f"Certificate {STORED}")
    operator = logged_on(console_url, console_accounts["operator"])

    # The search result (by mail address, by either form of the serial) and the
    # certificate's own page, reached by either form.
    for query in ("alice@example.com", STORED, PADDED):
        found = operator.get("/admin/people", params={"q": query})
        assert found.status_code == 200, found.text
        assert f'<a href="/admin/certificates/{PADDED}"><code>{PADDED}</code></a>' in found.text
        assert not any(text in found.text for text in unpadded), query
        if query == "alice@example.com":  # the person too; the OU column says what it is
            assert '<th scope="col">Department</th>' in found.text
            assert "<td>Berlin</td>" in found.text and ">Site<" not in found.text
    for form in (STORED, PADDED):
        page = operator.get(f"/admin/certificates/{form}")
        assert page.status_code == 200, page.text
        assert f"<h1>Certificate <code>{PADDED}</code></h1>" in page.text
        assert f'action="/admin/certificates/{PADDED}/revoke"' in page.text
        assert not any(text in page.text for text in unpadded)

    # The confirmation step and the message after the revocation.
    confirm = operator.get(f"/admin/certificates/{STORED}/revoke", params={"reason": "superseded"})
    assert confirm.status_code == 200, confirm.text
    assert f"<dd><code>{PADDED}</code></dd>" in confirm.text
    assert f'action="/admin/certificates/{PADDED}/revoke"' in confirm.text
    assert not any(text in confirm.text for text in unpadded)
    done = operator.post(
        f"/admin/certificates/{PADDED}/revoke",
        data={"reason": "superseded", "confirm": "yes", "csrf": csrf_of(operator)},
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/admin/certificates/{PADDED}"
    after = operator.get(done.headers["location"])
    assert f"Certificate {PADDED} (alice@example.com) revoked: superseded." in after.text
    assert not any(text in after.text for text in unpadded)
    assert "revoked" in ok(mailpki("certs", "list", "--home", sqlite_home)).out
