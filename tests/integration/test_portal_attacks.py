"""The enrollment portal under attack: forged and replayed links, CSRF, brute force,
XSS, path traversal, stolen download links, session fixation and hostile forms.

One real instance per module (embedded directory, HR PINs), driven in process with
Starlette's TestClient. Every test logs on as a person of its own and from a client
address of its own, so lockouts and the per-address rate limit do not leak between
tests.
"""

from __future__ import annotations

import email
import email.policy
import html
import itertools
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from starlette.applications import Starlette
from starlette.testclient import TestClient

from mailpki.instance.instance import Instance
from mailpki.instance.portal import Portal
from mailpki.store.models import CertificateRecord, Invitation, PortalSession
from mailpki.web.server import create_app
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

BASE_URL = "http://pki.example.com"
COOKIE = "mailpki_session"  # the logged-on session
PRE = "mailpki_pre"  # the pre-logon nonce (no server state)
PEOPLE = 90
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
# The result page's Download buttons (/fetch/HANDLE, which then starts /download/HANDLE).
DOWNLOAD_RE = re.compile(r'href="/fetch/([A-Za-z0-9_-]{43})"')
TOKEN_RE = re.compile(r"/enroll/([A-Za-z0-9_-]{43})")


# -- the instance ------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    login: str
    mail: str
    employee: str
    pin: str


@dataclass
class Env:
    home: Path
    app: Starlette
    instance: Instance
    people: Iterator[Person]
    addresses: Iterator[int]

    def person(self) -> Person:
        return next(self.people)

    def client(self, **kw: Any) -> TestClient:
        """A client from an address of its own (the logon rate limit is per address)."""
        n = next(self.addresses)
        kw.setdefault("follow_redirects", True)
        return TestClient(
            self.app, client=(f"10.{n // 250}.{n % 250}.7", 40000), raise_server_exceptions=False,
            **kw,
        )  # fmt: skip

    def issued(self, mail: str) -> int:
        """Every certificate ever issued to `mail` (revoked ones included)."""
        with self.instance.db.session() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(CertificateRecord)
                    .where(func.lower(CertificateRecord.email) == mail.lower())
                )
                or 0
            )

    def session_count(self) -> int:
        with self.instance.db.session() as session:
            return int(session.scalar(select(func.count()).select_from(PortalSession)) or 0)


def _init(home: Path, *, base_url: str = BASE_URL) -> None:
    result = mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err
    result = mailpki("config", "set", "--home", home, "web.base_url", base_url)
    assert result.code == 0, result.err


def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _import(home: Path, people: list[tuple[str, str, str, str]], pins: list[Person]) -> None:
    """people: (login, mail, name, site)."""
    rows = ["login,mail,name,given_name,surname,site,enabled"]
    for login, mail, name, site in people:
        rows.append(
            ",".join([login, mail, _csv_field(name), "Given", "Sur", _csv_field(site), "true"])
        )
    csv = home.parent / f"people-{home.name}.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = mailpki("directory", "import", "--home", home, csv)
    assert result.code == 0 and " 0 refused" in result.out, (result.out, result.err)
    pin_rows = ["employee_id,mail,name,pin"]
    pin_rows += [f"{p.employee},{p.mail},Someone,{p.pin}" for p in pins]
    pin_csv = home.parent / f"pins-{home.name}.csv"
    pin_csv.write_text("\n".join(pin_rows) + "\n", encoding="utf-8")
    result = mailpki("pins", "import", "--home", home, pin_csv)
    assert result.code == 0 and " 0 refused" in result.out, (result.out, result.err)


def _people(prefix: str, count: int) -> list[Person]:
    return [
        Person(f"{prefix}{i:02d}", f"{prefix}{i:02d}@example.com", f"E{prefix}{i:02d}",
               f"{40000000 + 7919 * i:08d}")
        for i in range(count)
    ]  # fmt: skip


XSS_PEOPLE = [
    Person("xss1", "xss1@example.com", "EXSS1", "31415926"),
    Person("xss2", "xss2@example.com", "EXSS2", "27182818"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    home = tmp_path_factory.mktemp("portal") / "corp"
    _init(home)
    people = _people("p", PEOPLE)
    _import(
        home,
        [(p.login, p.mail, f"Person {p.login.upper()}", "HQ") for p in people]
        + [
            ("xss1", "xss1@example.com", XSS_SCRIPT, XSS_IMG),
            ("xss2", "xss2@example.com", XSS_IMG, XSS_SCRIPT),
        ],
        people + XSS_PEOPLE,
    )
    app = create_app(home)
    instance = Instance.open(home)
    yield Env(home, app, instance, iter(people), itertools.count(1))
    instance.db.dispose()


# -- helpers -----------------------------------------------------------------------------


def csrf_of(response: httpx.Response) -> str:
    found = CSRF_RE.search(response.text)
    assert found, response.text
    return found.group(1)


def error_of(response: httpx.Response) -> str:
    found = re.search(r'class="error"[^>]*>([^<]*)<', response.text)
    return html.unescape(found.group(1)) if found else ""


def logon(
    client: TestClient,
    person: Person,
    *,
    pin: str | None = None,
    invitation: str | None = None,
) -> httpx.Response:
    page = client.get(f"/enroll/{invitation}" if invitation else "/")
    data = {"csrf": csrf_of(page), "method": "pin", "login": person.employee,
            "secret": person.pin if pin is None else pin}  # fmt: skip
    if invitation:
        data["invitation"] = invitation
    return client.post("/logon", data=data, follow_redirects=False)


def logged_on(env: Env, person: Person | None = None) -> tuple[TestClient, Person]:
    who = person or env.person()
    client = env.client()
    response = logon(client, who)
    assert response.status_code == 303 and response.headers["location"] == "/form", (
        response.status_code, error_of(response),
    )  # fmt: skip
    return client, who


def submit(client: TestClient, **fields: str) -> httpx.Response:
    data = {"csrf": csrf_of(client.get("/form")), "mode": "single",
            "password_choice": "generate", "accept": "on"}  # fmt: skip
    data.update(fields)
    return client.post("/form", data=data, follow_redirects=False)


def enrolled(env: Env) -> tuple[TestClient, Person, list[str]]:
    client, who = logged_on(env)
    response = submit(client)
    assert response.status_code == 200, error_of(response)
    handles = DOWNLOAD_RE.findall(response.text)
    assert handles
    return client, who, handles


def invite(env: Env, login: str, *extra: str) -> str:
    """Invite `login`; the token of the link in the newest mail to them."""
    before = set((env.home / "outbox").glob("*.eml"))
    result = mailpki("invite", "--home", env.home, *extra, login)
    assert result.code == 0 and "1 invited" in result.out, (result.out, result.err)
    new = set((env.home / "outbox").glob("*.eml")) - before
    assert len(new) == 1
    message = email.message_from_bytes(new.pop().read_bytes(), policy=email.policy.default)
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()  # type: ignore[attr-defined]
    assert f"{BASE_URL}/enroll/" in text
    found = TOKEN_RE.search(text)
    assert found
    return found.group(1)


def assert_safe_html(response: httpx.Response) -> None:
    """The CSP of an HTML page forbids every script, and the page carries none."""
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers.get("content-security-policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
    assert directives.get("default-src") == ["'none'"], csp
    script = directives.get("script-src", directives["default-src"])
    assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script, csp
    assert "'unsafe-inline'" not in directives.get("script-src-elem", []), csp
    assert directives.get("frame-ancestors") == ["'none'"], csp
    body = response.text.lower()
    assert "<script" not in body
    assert "<img src=x" not in body  # the injected tag never appears raw
    assert "javascript:" not in body


def raw_get(app: Starlette, path: str) -> tuple[int, bytes]:
    """GET exactly `path` as a server hands it to the app (no client normalising)."""

    async def run() -> tuple[int, bytes]:
        status: list[int] = []
        body: list[bytes] = []
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.encode("utf-8", "surrogateescape"), "query_string": b"",
            "root_path": "", "headers": [(b"host", b"testserver")],
            "client": ("192.0.2.1", 1234), "server": ("testserver", 80),
        }  # fmt: skip

        finished = anyio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    finished.set()

        await app(scope, receive, send)
        return status[0], b"".join(body)

    return anyio.run(run)


# -- invitations -------------------------------------------------------------------------


def test_forged_invitation_link_is_gone_with_a_clear_message(env: Env) -> None:
    client = env.client()
    forged = "A" * 21 + "_-" + "z" * 20
    assert len(forged) == 43
    response = client.get(f"/enroll/{forged}")
    assert response.status_code == 410
    assert "This invitation link is not valid." in response.text
    assert_safe_html(response)
    assert 'name="invitation"' not in response.text


@pytest.mark.parametrize(
    "token",
    ["short", "A" * 42, "A" * 44, "A" * 42 + "%21", "A" * 42 + "%C3%A9", "%00" * 43,
     "A" * 5000, "..%2f..%2fconfig.toml", XSS_SCRIPT.replace("<", "%3C").replace(">", "%3E")],
)  # fmt: skip
def test_malformed_invitation_tokens_are_refused(env: Env, token: str) -> None:
    response = env.client().get(f"/enroll/{token}")
    assert response.status_code in (404, 410), response.status_code
    if response.status_code == 410:
        assert "not valid" in response.text
        assert_safe_html(response)
    assert "<script>alert" not in response.text


def test_an_expired_invitation_is_refused(env: Env) -> None:
    who = env.person()
    token = invite(env, who.login)
    assert env.client().get(f"/enroll/{token}").status_code == 200
    with env.instance.db.transaction() as session:
        session.execute(
            update(Invitation)
            .where(Invitation.login == who.login)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    client = env.client()
    response = client.get(f"/enroll/{token}")
    assert response.status_code == 410
    assert "expired" in response.text
    # Posting the token straight to /logon is refused too, and the PIN is not spent.
    page = client.get("/")
    response = client.post(
        "/logon",
        data={
            "csrf": csrf_of(page),
            "method": "pin",
            "login": who.employee,
            "secret": who.pin,
            "invitation": token,
        },
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "expired" in error_of(response)
    logged_on(env, who)


def test_a_used_invitation_cannot_be_used_again(env: Env) -> None:
    who = env.person()
    token = invite(env, who.login)
    first = env.client()
    response = logon(first, who, invitation=token)
    assert response.status_code == 303
    with env.instance.db.session() as session:
        row = session.scalar(select(Invitation).where(Invitation.login == who.login))
        assert row is not None and row.used_at is not None

    again = env.client()
    response = again.get(f"/enroll/{token}")
    assert response.status_code == 410
    assert "already used" in response.text
    page = again.get("/")
    response = again.post(
        "/logon",
        data={
            "csrf": csrf_of(page),
            "method": "pin",
            "login": who.employee,
            "secret": "00000000",
            "invitation": token,
        },
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "already used" in error_of(response)


def test_a_superseded_invitation_is_refused(env: Env) -> None:
    who = env.person()
    old = invite(env, who.login)
    new = invite(env, who.login, "--resend")
    assert old != new
    response = env.client().get(f"/enroll/{old}")
    assert response.status_code == 410
    assert "replaced by a newer one" in response.text
    client = env.client()
    assert client.get(f"/enroll/{new}").status_code == 200
    assert logon(client, who, invitation=new).status_code == 303


def test_opening_an_invitation_does_not_use_it(env: Env) -> None:
    """Mail scanners fetch links: a GET must not spend the invitation."""
    who = env.person()
    token = invite(env, who.login)
    for _ in range(3):
        response = env.client().get(f"/enroll/{token}")
        assert response.status_code == 200
        assert who.mail in response.text
    assert logon(env.client(), who, invitation=token).status_code == 303


def test_someone_elses_invitation_is_refused_and_stays_usable(env: Env) -> None:
    alice, bob = env.person(), env.person()
    token = invite(env, alice.login)
    client = env.client()
    response = logon(client, bob, invitation=token)
    assert response.status_code == 401
    assert "sent to someone else" in error_of(response)
    assert client.get("/form", follow_redirects=False).status_code == 303  # not logged on
    assert env.client().get(f"/enroll/{token}").status_code == 200
    assert logon(env.client(), alice, invitation=token).status_code == 303


def test_someone_elses_invitation_does_not_burn_your_pin(env: Env) -> None:
    alice, bob = env.person(), env.person()
    token = invite(env, alice.login)
    assert logon(env.client(), bob, invitation=token).status_code == 401
    response = logon(env.client(), bob)
    assert response.status_code == 303, error_of(response)


# -- CSRF --------------------------------------------------------------------------------


def _posts_without_valid_csrf(
    env: Env, path: str, fields: dict[str, str]
) -> Iterator[tuple[str, TestClient, dict[str, str]]]:
    """(case, client, form) for: no token, a wrong one, another session's one."""
    other = env.client()
    other_csrf = csrf_of(other.get("/"))
    for case, token in (("missing", None), ("wrong", "A" * 43), ("other", other_csrf),
                        ("empty", "")):  # fmt: skip
        yield case, env.client(), ({**fields} if token is None else {**fields, "csrf": token})


def test_logon_without_csrf_is_refused_and_creates_nothing(env: Env) -> None:
    who = env.person()
    fields = {"method": "pin", "login": who.employee, "secret": who.pin}
    for case, client, form in _posts_without_valid_csrf(env, "/logon", fields):
        # No cookie at all: no session may come out of it.
        sessions = env.session_count()
        response = client.post("/logon", data=form, follow_redirects=False)
        assert response.status_code == 403, case
        assert "set-cookie" not in response.headers, case
        assert env.session_count() == sessions, case
        # With a pre-logon session of its own (csrf from someone else or wrong).
        client.get("/")
        response = client.post("/logon", data=form, follow_redirects=False)
        assert response.status_code == 403, case
        assert client.get("/form", follow_redirects=False).status_code == 303, case
    # None of it spent the PIN or counted as a failure.
    logged_on(env, who)


def test_form_without_csrf_is_refused_and_issues_nothing(env: Env) -> None:
    victim, who = logged_on(env)
    fields = {"mode": "single", "password_choice": "generate", "accept": "on"}
    attacker = env.client()
    attacker_csrf = csrf_of(attacker.get("/"))
    for csrf in (None, "", "A" * 43, attacker_csrf, csrf_of(attacker.get("/")) + "x"):
        form = fields if csrf is None else {**fields, "csrf": csrf}
        response = victim.post("/form", data=form, follow_redirects=False)
        assert response.status_code == 403
        assert "did not come from this site" in response.text
    assert env.issued(who.mail) == 0
    assert victim.get("/form", follow_redirects=False).status_code == 200


def test_form_with_a_pre_logon_csrf_is_refused(env: Env) -> None:
    """The CSRF token changes at logon: one learnt before (fixation) is worthless."""
    client = env.client()
    before = csrf_of(client.get("/"))
    who = env.person()
    response = client.post(
        "/logon", data={"csrf": before, "method": "pin", "login": who.employee,
                        "secret": who.pin}, follow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 303
    response = client.post(
        "/form", data={"csrf": before, "mode": "single", "password_choice": "generate",
                       "accept": "on"}, follow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 403
    assert env.issued(who.mail) == 0


def test_logout_without_csrf_is_refused(env: Env) -> None:
    client, _ = logged_on(env)
    other = env.client()
    for csrf in (None, "", "B" * 43, csrf_of(other.get("/"))):
        response = client.post(
            "/logout",
            data={"x": "1"} if csrf is None else {"csrf": csrf},
            follow_redirects=False,
        )
        assert response.status_code == 403
    assert client.get("/form", follow_redirects=False).status_code == 200  # still logged on


# -- brute force -------------------------------------------------------------------------


def test_repeated_wrong_pins_lock_the_login(env: Env) -> None:
    who = env.person()
    max_failures = int(env.instance.config.get("auth.max_failures"))
    client = env.client()
    for attempt in range(max_failures):
        response = logon(client, who, pin=f"{10000000 + attempt:08d}")
        assert response.status_code == 401
        assert error_of(response) == "Wrong employee id or PIN."
    # Now even the right PIN, from another address, meets the lockout.
    for source in (client, env.client()):
        response = logon(source, who)
        assert response.status_code == 401
        assert "Too many failed logons" in error_of(response)
        assert "PIN is void" in error_of(response) and "ask HR" in error_of(response)
        assert source.get("/form", follow_redirects=False).status_code == 303


def test_per_address_rate_limit(env: Env) -> None:
    client = env.client()
    csrf = csrf_of(client.get("/"))
    statuses = []
    for _ in range(21):
        response = client.post(
            "/logon", data={"csrf": csrf, "method": "pin", "login": "", "secret": "x"},
            follow_redirects=False,
        )  # fmt: skip
        statuses.append(response.status_code)
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429
    assert "Too many attempts from your address" in response.text
    assert_safe_html(response)
    # Even the right PIN waits; another address is not affected.
    who = env.person()
    response = client.post(
        "/logon", data={"csrf": csrf, "method": "pin", "login": who.employee,
                        "secret": who.pin}, follow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 429
    logged_on(env, who)


# -- XSS and headers ---------------------------------------------------------------------


ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
ESCAPED_IMG = "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"


@pytest.mark.parametrize("who", XSS_PEOPLE, ids=lambda p: p.login)
def test_hostile_directory_names_stay_text(env: Env, who: Person) -> None:
    client, _ = logged_on(env, who)
    form = client.get("/form")
    assert form.status_code == 200
    assert_safe_html(form)
    assert ESCAPED_SCRIPT in form.text and ESCAPED_IMG in form.text
    assert XSS_SCRIPT not in form.text and XSS_IMG not in form.text
    # A failed submit re-renders the form with the same data.
    bad = submit(client, accept="")
    assert bad.status_code == 400
    assert_safe_html(bad)
    assert XSS_SCRIPT not in bad.text and XSS_IMG not in bad.text
    done = submit(client)
    assert done.status_code == 200
    assert_safe_html(done)
    assert XSS_SCRIPT not in done.text and XSS_IMG not in done.text
    again = client.get("/done")
    assert_safe_html(again)
    handle = DOWNLOAD_RE.findall(done.text)[0]
    download = client.get(f"/download/{handle}")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/x-pkcs12"
    assert download.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in download.headers["content-disposition"]


def test_hostile_logon_input_is_echoed_as_text(env: Env) -> None:
    client = env.client()
    csrf = csrf_of(client.get("/"))
    for login, invitation in ((XSS_IMG, None), (XSS_SCRIPT, None), ("", XSS_IMG)):
        form = {"csrf": csrf, "method": "pin", "login": login, "secret": "12345678"}
        if invitation:
            form["invitation"] = invitation
        response = client.post("/logon", data=form, follow_redirects=False)
        assert response.status_code in (400, 401)
        assert_safe_html(response)
        assert XSS_IMG not in response.text and XSS_SCRIPT not in response.text
    response = client.post(
        "/logon", data={"csrf": csrf, "method": XSS_IMG, "login": "x", "secret": "y"},
        follow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 400
    assert_safe_html(response)
    assert XSS_IMG not in response.text


def test_every_page_has_the_strict_csp_and_no_script(env: Env) -> None:
    anonymous = env.client()
    pages = [anonymous.get(p) for p in ("/", "/tutorial", f"/enroll/{'Q' * 43}", "/enroll/x")]
    pages.append(anonymous.post("/logon", data={"csrf": "nope"}))
    client, _ = logged_on(env)
    pages += [client.get("/form"), client.get("/tutorial"), submit(client, mode="bogus")]
    pages += [client.get(f"/download/{'Z' * 43}")]
    for response in pages:
        assert_safe_html(response)
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


# -- static files and the theme ------------------------------------------------------------


TRAVERSALS = [
    "/static/../config.toml",
    "/static/%2e%2e/config.toml",
    "/static/..%2fconfig.toml",
    "/static/%2e%2e%2fconfig.toml",
    "/static/tutorial/../../templates/base.html",
    "/static/tutorial/%2e%2e/%2e%2e/templates/base.html",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/..\\config.toml",
    "/static/portal.css%00.toml",
    "/static/portal.css/../../config.toml",
    "/static/~/config.toml",
    "/static/.%2e/.%2e/mailpki.db",
]

RAW_TRAVERSALS = [
    "/static/../config.toml",
    "/static/../../../../etc/passwd",
    "/static/tutorial/../../templates/base.html",
    "/static/tutorial/../portal.css",
    "/static//etc/passwd",
    "/static/./portal.css",
    "/static/../secrets/ca-passphrase",
    "/static/..\\..\\config.toml",
    "/static/portal.css\x00.svg",
    "/static/../templates/base.html",
    "/static/" + "a/" * 120 + "x.css",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_static_traversal_through_a_client(env: Env, path: str) -> None:
    response = env.client().get(path)
    assert response.status_code == 404, response.request.url
    assert b"passphrase" not in response.content and b"[instance]" not in response.content


@pytest.mark.parametrize("path", RAW_TRAVERSALS)
def test_static_traversal_as_the_server_delivers_it(env: Env, path: str) -> None:
    status, body = raw_get(env.app, path)
    assert status == 404
    assert b"[instance]" not in body and b"{% block" not in body


def test_the_built_in_static_files_are_served(env: Env) -> None:
    for path in ("/static/portal.css", "/static/tutorial/gpgsm.svg", "/static/logo.svg"):
        status, _ = raw_get(env.app, path)
        assert status == 200, path
    svg = env.client().get("/static/logo.svg")
    assert "default-src 'none'" in svg.headers["content-security-policy"]


@pytest.fixture
def themed(tmp_path: Path) -> Path:
    home = tmp_path / "themed"
    _init(home)
    return home


def test_theme_overrides_and_symlinks(themed: Path, tmp_path: Path) -> None:
    static, templates = themed / "theme" / "static", themed / "theme" / "templates"
    static.mkdir(parents=True)
    templates.mkdir(parents=True)
    (static / "portal.css").write_text("/* THEMED CSS */\nbody { color: red }\n")
    (templates / "error.html").write_text(
        '{% extends "base.html" %}{% block content %}'
        "<p>THEMED ERROR: {{ message }}</p>{% endblock %}\n"
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.css").write_text("/* OUTSIDE SECRET */")
    (outside / "evil.svg").write_text("<svg>OUTSIDE SECRET</svg>")
    (static / "leak.css").symlink_to(outside / "secret.css")
    (static / "dir").symlink_to(outside, target_is_directory=True)
    (static / "logo.svg").symlink_to(outside / "evil.svg")  # shadows a built-in name
    (static / "config.css").symlink_to(themed / "config.toml")
    (static / "loop.css").symlink_to(static / "loop.css")
    (static / "huge.css").write_bytes(b"/*" + b" " * (2 * 1024 * 1024) + b"*/")
    (static / "inner.css").symlink_to(static / "portal.css")  # inside the theme: fine

    client = TestClient(create_app(themed), raise_server_exceptions=False)
    css = client.get("/static/portal.css")
    assert css.status_code == 200 and "THEMED CSS" in css.text
    assert css.headers["content-type"].startswith("text/css")
    assert client.get("/static/inner.css").status_code == 200
    for path in ("/static/leak.css", "/static/dir/secret.css", "/static/config.css",
                 "/static/loop.css", "/static/huge.css"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"OUTSIDE SECRET" not in response.content
    logo = client.get("/static/logo.svg")  # falls back to the built-in logo
    assert logo.status_code == 200 and b"OUTSIDE SECRET" not in logo.content

    page = client.get("/")
    assert "/static/portal.css?v=" in page.text
    error = client.get(f"/enroll/{'A' * 43}")
    assert error.status_code == 410
    assert "THEMED ERROR: This invitation link is not valid." in error.text
    assert "Something went wrong" not in error.text
    assert_safe_html(error)
    # The built-in templates still serve the other pages.
    assert "Get your secure mail certificate" in page.text


# -- downloads -----------------------------------------------------------------------------


def test_a_download_link_works_only_in_its_own_session_and_once(env: Env) -> None:
    owner, who, handles = enrolled(env)
    thief, _ = logged_on(env)
    anonymous = env.client()
    anonymous.get("/")  # a pre-logon session
    stranger = env.client()  # no session at all
    for client in (thief, anonymous, stranger):
        response = client.get(f"/download/{handles[0]}")
        assert response.status_code == 404
        assert "not valid, was used or has expired" in response.text
        assert response.headers["content-type"].startswith("text/html")
    first = owner.get(f"/download/{handles[0]}")
    assert first.status_code == 200
    assert first.headers["content-disposition"] == f'attachment; filename="{who.mail}.p12"'
    assert first.headers["cache-control"] == "no-store"
    assert len(first.content) > 500
    assert owner.get(f"/download/{handles[0]}").status_code == 404
    assert "downloaded" in owner.get("/done").text


def test_a_stolen_session_cookie_value_from_before_logon_gets_no_download(env: Env) -> None:
    client = env.client()
    client.get("/")
    fixed = client.cookies[PRE]
    who = env.person()
    assert logon(client, who).status_code == 303
    response = submit(client)
    handle = DOWNLOAD_RE.findall(response.text)[0]
    attacker = env.client(cookies={PRE: fixed})
    assert attacker.get(f"/download/{handle}").status_code == 404
    assert attacker.get("/form", follow_redirects=False).status_code == 303
    assert client.get(f"/download/{handle}").status_code == 200


@pytest.mark.parametrize(
    "handle",
    ["x", "A" * 42, "A" * 44, "!" * 43, "%2e%2e%2f" * 5, "A" * 2000, "%00" * 43, "é" * 43],
)
def test_malformed_download_handles(env: Env, handle: str) -> None:
    client, _ = logged_on(env)
    response = client.get(f"/download/{handle}")
    assert response.status_code == 404


def test_dual_key_downloads_are_both_bound_to_the_session(env: Env) -> None:
    client, who = logged_on(env)
    response = submit(client, mode="dual")
    assert response.status_code == 200, error_of(response)
    handles = DOWNLOAD_RE.findall(response.text)
    assert len(handles) == 2
    other, _ = logged_on(env)
    for handle in handles:
        assert other.get(f"/download/{handle}").status_code == 404
    names = [client.get(f"/download/{h}").headers["content-disposition"] for h in handles]
    assert names == [f'attachment; filename="{who.mail}-encryption.p12"',
                     f'attachment; filename="{who.mail}-signing.p12"']  # fmt: skip
    assert all(client.get(f"/download/{h}").status_code == 404 for h in handles)


def test_the_iphone_profile_is_the_same_one_time_download(env: Env) -> None:
    client, who, handles = enrolled(env)
    other, _ = logged_on(env)
    assert other.get(f"/download/{handles[0]}/mobileconfig").status_code == 404
    assert client.head(f"/download/{handles[0]}/mobileconfig").status_code in (404, 405)
    profile = client.get(f"/download/{handles[0]}/mobileconfig")
    assert profile.status_code == 200
    assert profile.headers["content-type"] == "application/x-apple-aspen-config"
    assert profile.headers["cache-control"] == "no-store"
    assert profile.headers["content-disposition"] == (
        f'attachment; filename="{who.mail}.mobileconfig"'
    )
    assert b"com.apple.security.pkcs12" in profile.content
    assert client.get(f"/download/{handles[0]}").status_code == 404  # spent: one or the other
    assert client.get(f"/download/{handles[0]}/mobileconfig").status_code == 404


def test_a_head_request_does_not_spend_the_download(env: Env) -> None:
    client, _, handles = enrolled(env)
    client.head(f"/download/{handles[0]}")
    assert client.get(f"/download/{handles[0]}").status_code == 200


# -- sessions and cookies ------------------------------------------------------------------


def _cookies(response: httpx.Response) -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (value, attributes) of every Set-Cookie of a response."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        first, *rest = [part.strip() for part in header.split(";")]
        name, _, value = first.partition("=")
        attributes = {}
        for part in rest:
            key, _, val = part.partition("=")
            attributes[key.lower()] = val
        found[name] = (value, attributes)
    return found


def _assert_flags(attributes: dict[str, str], *, secure: bool) -> None:
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "lax"
    assert attributes["path"] == "/"
    assert "domain" not in attributes
    assert ("secure" in attributes) is secure


def test_page_views_write_no_session(env: Env) -> None:
    """Before logon a visitor costs no database write (only a nonce cookie)."""
    who = env.person()
    token = invite(env, who.login)
    before = env.session_count()
    for path in ("/", "/tutorial", f"/enroll/{token}", f"/enroll/{'A' * 43}", "/form"):
        env.client().get(path)
    client = env.client()
    for _ in range(5):
        client.get("/")
    assert env.session_count() == before


def test_logon_rotates_the_session(env: Env) -> None:
    client = env.client()
    before = client.get("/")
    nonce, pre_csrf = client.cookies[PRE], csrf_of(before)
    response = logon(client, env.person())
    cookies = _cookies(response)
    token = cookies[COOKIE][0]
    assert token and token != nonce
    assert cookies[PRE][1].get("max-age") == "0"  # the nonce cookie is dropped
    assert client.get("/form", follow_redirects=False).status_code == 200
    # The pre-logon cookie (a fixation attempt) is not logged on, and its CSRF token
    # does not work for the logged-on session.
    fixed = env.client(cookies={PRE: nonce})
    assert fixed.get("/form", follow_redirects=False).status_code == 303
    both = env.client(cookies={PRE: nonce, COOKIE: token})
    response = both.post("/logout", data={"csrf": pre_csrf}, follow_redirects=False)
    assert response.status_code == 403
    assert client.get("/form", follow_redirects=False).status_code == 200

    # Logging on again from a logged-on session kills the older session token.
    again = client.post(
        "/logon",
        data={"csrf": csrf_of(client.get("/form")), "method": "pin",
              "login": (other := env.person()).employee, "secret": other.pin},
        follow_redirects=False,
    )  # fmt: skip
    assert again.status_code == 303
    newer = _cookies(again)[COOKIE][0]
    assert newer != token
    assert Portal(env.instance).sessions.load(token) is None
    stale = env.client(cookies={COOKIE: token})
    assert stale.get("/form", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    "nonce", ["A" * 43, "x", "A" * 44, "", "..%2f", "A" * 42 + "!"], ids=lambda n: n[:6] or "empty"
)
def test_a_forged_pre_logon_cookie_gives_no_csrf_token(env: Env, nonce: str) -> None:
    """The pre-logon CSRF token is an HMAC of the nonce: knowing the nonce alone (or
    guessing a token) gets no POST through."""
    client = env.client(cookies={PRE: nonce})
    who = env.person()
    for guess in ("", nonce, "A" * 64, "0" * 64):
        response = client.post(
            "/logon", data={"csrf": guess, "method": "pin", "login": who.employee,
                            "secret": who.pin}, follow_redirects=False,
        )  # fmt: skip
        assert response.status_code == 403
    logged_on(env, who)


def test_logout_kills_the_session(env: Env) -> None:
    client, _, handles = enrolled(env)
    token = client.cookies[COOKIE]
    response = client.post("/logout", data={"csrf": csrf_of(client.get("/done"))},
                           follow_redirects=False)  # fmt: skip
    assert response.status_code == 303 and response.headers["location"] == "/"
    value, attributes = _cookies(response)[COOKIE]
    assert value in ("", '""') and attributes.get("max-age") == "0"
    replay = env.client(cookies={COOKIE: token})
    assert replay.get("/form", follow_redirects=False).status_code == 303
    assert replay.get(f"/download/{handles[0]}").status_code == 404
    assert Portal(env.instance).sessions.load(token) is None


def test_cookie_flags_over_http(env: Env) -> None:
    client = env.client()
    value, attributes = _cookies(client.get("/"))[PRE]
    assert len(value) == 43
    _assert_flags(attributes, secure=False)
    cookies = _cookies(logon(client, env.person()))
    value, attributes = cookies[COOKIE]
    assert len(value) == 43
    _assert_flags(attributes, secure=False)


def test_secure_host_cookies_behind_https(tmp_path: Path) -> None:
    home = tmp_path / "https"
    _init(home, base_url="https://pki.example.com")
    person = _people("s", 1)[0]
    _import(home, [(person.login, person.mail, "Secure Person", "HQ")], [person])
    client = TestClient(create_app(home), base_url="https://testserver",
                        raise_server_exceptions=False)  # fmt: skip
    cookies = _cookies(client.get("/"))
    assert list(cookies) == ["__Host-mailpki-pre"]
    _assert_flags(cookies["__Host-mailpki-pre"][1], secure=True)
    response = logon(client, person)
    assert response.status_code == 303, error_of(response)
    cookies = _cookies(response)
    _assert_flags(cookies["__Host-mailpki"][1], secure=True)
    assert cookies["__Host-mailpki-pre"][1].get("max-age") == "0"
    assert "mailpki_session" not in cookies and "mailpki_pre" not in cookies
    response = client.post("/logout", data={"csrf": csrf_of(client.get("/form"))},
                           follow_redirects=False)  # fmt: skip
    _assert_flags(_cookies(response)["__Host-mailpki"][1], secure=True)

    # An explicit "false" wins over auto.
    assert mailpki("config", "set", "--home", home, "portal.secure_cookies", "false").code == 0
    plain = TestClient(create_app(home), raise_server_exceptions=False)
    cookies = _cookies(plain.get("/"))
    assert list(cookies) == [PRE]
    _assert_flags(cookies[PRE][1], secure=False)


# -- the form ------------------------------------------------------------------------------


def test_missing_accept_issues_nothing(env: Env) -> None:
    client, who = logged_on(env)
    for accept in ("", "off", "yes", "ON", "on "):
        response = submit(client, accept=accept)
        assert response.status_code == 400
        assert "accept the terms" in error_of(response)
    data = {"csrf": csrf_of(client.get("/form")), "mode": "single",
            "password_choice": "generate"}  # fmt: skip
    response = client.post("/form", data=data, follow_redirects=False)
    assert response.status_code == 400
    assert env.issued(who.mail) == 0


@pytest.mark.parametrize(
    ("field", "value"), [("mode", "triple"), ("mode", "Single"), ("password_choice", "none"),
                         ("password_choice", "GENERATE"), ("mode", "single\x00")],
)  # fmt: skip
def test_unknown_choices_are_refused(env: Env, field: str, value: str) -> None:
    client, who = logged_on(env)
    response = submit(client, **{field: value})
    assert response.status_code == 400
    assert env.issued(who.mail) == 0


@pytest.mark.parametrize(
    ("password", "confirm", "reason"),
    [
        ("Tr0ub4dor&3xyz", "Tr0ub4dor&3xyZ", "The two passwords differ"),
        ("short1!A", "short1!A", "at least 12 characters"),
        ("Password1234!", "Password1234!", "every attacker's list"),
        ("abcdefghijkl", "abcdefghijkl", "three of"),
        ("", "", "at least 12 characters"),
    ],
)
def test_a_bad_chosen_password_is_refused_with_the_reason(
    env: Env, password: str, confirm: str, reason: str
) -> None:
    client, who = logged_on(env)
    response = submit(client, password_choice="choose", password=password, confirm=confirm)
    assert response.status_code == 400
    assert reason in error_of(response)
    assert password not in response.text or not password  # never echoed back
    assert env.issued(who.mail) == 0
    assert client.get("/form", follow_redirects=False).status_code == 200


def test_a_chosen_password_containing_the_login_is_refused(env: Env) -> None:
    client, who = logged_on(env)
    password = f"X!9{who.login}-Secret"
    response = submit(client, password_choice="choose", password=password, confirm=password)
    assert response.status_code == 400
    assert "your name" in error_of(response)
    assert env.issued(who.mail) == 0


def test_a_good_chosen_password_issues_and_shows_no_password(env: Env) -> None:
    client, who = logged_on(env)
    password = "Tr0ub4dor&3xyz"
    response = submit(client, password_choice="choose", password=password, confirm=password)
    assert response.status_code == 200
    assert password not in response.text and "generated-password" not in response.text
    assert env.issued(who.mail) == 1


def test_oversized_body_is_refused(env: Env) -> None:
    client, who = logged_on(env)
    csrf = csrf_of(client.get("/form"))
    body = f"csrf={csrf}&mode=single&password_choice=generate&accept=on&pad=" + "a" * 17000
    response = client.post(
        "/form", content=body.encode(), follow_redirects=False,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert response.status_code == 400
    assert "too large or not a form" in response.text
    # Too many fields.
    data = {"csrf": csrf, "accept": "on", **{f"f{i}": "1" for i in range(30)}}
    assert client.post("/form", data=data, follow_redirects=False).status_code == 400
    assert env.issued(who.mail) == 0


@pytest.mark.parametrize("field", ["accept", "password", "confirm"])
def test_an_oversized_field_is_refused(env: Env, field: str) -> None:
    client, who = logged_on(env)
    response = submit(client, password_choice="choose", **{field: "x" * 2000})
    assert response.status_code == 400
    assert env.issued(who.mail) == 0


@pytest.mark.parametrize("field", ["mode", "password_choice", "legacy"])
def test_an_oversized_choice_field_is_a_400(env: Env, field: str) -> None:
    client, who = logged_on(env)
    response = submit(client, **{field: "x" * 2000})
    assert env.issued(who.mail) == 0
    assert response.status_code == 400


@pytest.mark.parametrize("field", ["login", "method", "invitation"])
def test_an_oversized_logon_field_is_a_400(env: Env, field: str) -> None:
    client = env.client()
    data = {"csrf": csrf_of(client.get("/")), "method": "pin", "login": "x", "secret": "1"}
    data[field] = "x" * 2000
    response = client.post("/logon", data=data, follow_redirects=False)
    assert response.status_code in (400, 401)


def test_an_oversized_secret_is_refused(env: Env) -> None:
    client = env.client()
    data = {"csrf": csrf_of(client.get("/")), "method": "pin", "login": "x",
            "secret": "1" * 2000}  # fmt: skip
    assert client.post("/logon", data=data, follow_redirects=False).status_code == 400


@pytest.mark.parametrize("kind", ["multipart", "json", "text", "none", "chunked"])
def test_a_form_of_the_wrong_type_is_refused(env: Env, kind: str) -> None:
    client, who = logged_on(env)
    fields = {"csrf": csrf_of(client.get("/form")), "mode": "single",
              "password_choice": "generate", "accept": "on"}  # fmt: skip
    if kind == "multipart":
        response = client.post("/form", data=fields, files={"f": ("a.txt", b"x")})
    elif kind == "json":
        response = client.post("/form", json=fields)
    elif kind == "text":
        response = client.post(
            "/form", content="&".join(f"{k}={v}" for k, v in fields.items()),
            headers={"content-type": "text/plain"},
        )  # fmt: skip
    elif kind == "none":
        response = client.post("/form", content=b"")
    else:

        def stream() -> Iterator[bytes]:
            yield "&".join(f"{k}={v}" for k, v in fields.items()).encode()

        response = client.post(
            "/form", content=stream(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
    assert response.status_code == 400, response.status_code
    assert env.issued(who.mail) == 0


def test_a_double_submit_issues_once(env: Env) -> None:
    client, who = logged_on(env)
    csrf = csrf_of(client.get("/form"))
    data = {"csrf": csrf, "mode": "single", "password_choice": "generate", "accept": "on"}
    first = client.post("/form", data=data, follow_redirects=False)
    assert first.status_code == 200
    second = client.post("/form", data=data, follow_redirects=False)
    assert second.status_code == 303 and second.headers["location"] == "/done"
    assert "generated-password" not in client.get("/done").text  # shown once only
    assert env.issued(who.mail) == 1
    assert client.get("/form", follow_redirects=False).headers["location"] == "/done"


def test_a_concurrent_double_submit_issues_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    client, who = logged_on(env)
    csrf = csrf_of(client.get("/form"))
    cookies = {COOKIE: client.cookies[COOKIE]}
    original = Portal.enroll

    def slow_enroll(self: Portal, *args: Any, **kw: Any) -> Any:
        time.sleep(0.3)  # a slow HSM or escrow: widens the window, changes nothing else
        return original(self, *args, **kw)

    monkeypatch.setattr(Portal, "enroll", slow_enroll)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def click() -> None:
        browser = env.client(cookies=cookies)
        barrier.wait()
        response = browser.post(
            "/form", data={"csrf": csrf, "mode": "single", "password_choice": "generate",
                           "accept": "on"}, follow_redirects=False,
        )  # fmt: skip
        statuses.append(response.status_code)

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) in ([200, 303], [200, 409], [200, 400])
    assert env.issued(who.mail) == 1


_VALUES = st.one_of(
    st.sampled_from(["on", "single", "dual", "generate", "choose", "", "off", "Tr0ub4dor&3xyz"]),
    st.text(max_size=40),
    st.text(alphabet="<>\"'&%;=\x00\r\n", max_size=20),
)
_FIELDS = st.dictionaries(
    st.one_of(
        st.sampled_from(["mode", "password_choice", "accept", "legacy", "password", "confirm"]),
        st.text(min_size=1, max_size=10),
    ),
    _VALUES,
    max_size=8,
)


@pytest.fixture
def fuzz_client(env: Env) -> TestClient:
    return logged_on(env)[0]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=_FIELDS)
def test_fuzz_the_form(env: Env, fuzz_client: TestClient, fields: dict[str, str]) -> None:
    csrf = csrf_of(fuzz_client.get("/form"))
    data = {**{k: v for k, v in fields.items() if k != "csrf"}, "csrf": csrf}
    response = fuzz_client.post("/form", data=data, follow_redirects=False)
    assert response.status_code in (200, 303, 400), (response.status_code, fields)
    if response.status_code in (200, 400):
        assert_safe_html(response)


def test_renew_without_csrf_or_without_a_due_certificate_changes_nothing(env: Env) -> None:
    victim, who = logged_on(env)
    attacker = env.client()
    attacker_csrf = csrf_of(attacker.get("/"))
    for csrf in (None, "", "A" * 43, attacker_csrf):
        form = {"password_choice": "generate"} if csrf is None else {"csrf": csrf}
        response = victim.post("/renew", data=form, follow_redirects=False)
        assert response.status_code == 403
    # Logged on, a valid token, but nothing due for renewal: a clear refusal.
    page = victim.get("/form")
    assert 'id="renewal"' not in page.text
    response = victim.post("/renew", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert response.status_code == 400
    assert "no certificate that is due" in error_of(response)
    # Not logged on: back to the logon page.
    stranger = env.client()
    response = stranger.post("/renew", data={"csrf": csrf_of(stranger.get("/"))},
                             follow_redirects=False)  # fmt: skip
    assert response.status_code in (303, 403)
    assert env.issued(who.mail) == 0
