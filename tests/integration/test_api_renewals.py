"""The API's renewal endpoints over real HTTP against `mailpki serve` (and a real SMTP
server): `GET /certificates/expiring` lists what `mailpki certs expiring` lists, paged;
`POST /certificates/{serial}/renewal-notice` mails the holder the expiry notice with a
one-time renewal link (the person renews in the portal: no key material reaches the
caller), refuses what the portal would not renew, and is audited with the token's name.

Certificates that really expire soon come from a profile override with a 20-day
validity (within the 60-day renewal window); the clock is never moved."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest

from mailpki.ca.serials import show_serial
from mailpki.enrollment.invitations import peek
from mailpki.instance.instance import Instance
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki
from tests.integration.test_api import call, token

pytestmark = pytest.mark.integration

BASE = "https://pki.example.com"
LINK_RE = re.compile(re.escape(BASE) + r"/enroll/([A-Za-z0-9_-]{43})")
PEOPLE = """login,mail,name,enabled
alice,alice@example.com,Alice Archer,true
bob,bob@example.com,Bob Baker,true
dave,dave@example.com,Dave Dale,true
erin,erin@example.com,Erin Eve,true
"""
OVERRIDE = "sponsored-multipurpose.toml"


def ok(result):  # type: ignore[no-untyped-def]
    assert result.code == 0, (result.out, result.err)
    return result


def short_profile(home: Path, on: bool) -> None:
    """An override of the default profile whose certificates live 20 days (or none)."""
    target = home / "profiles" / OVERRIDE
    if not on:
        target.unlink()
        return
    packaged = resources.files("mailpki.policy").joinpath("profiles", OVERRIDE)
    text = re.sub(r"(?m)^validity_days = \d+$", "validity_days = 20", packaged.read_text("utf-8"))
    target.write_text(text)


def enroll(home: Path, tmp_path: Path, email: str, name: str) -> str:
    """The new certificate's serial, as `certs list` prints it."""
    result = ok(mailpki("enroll", "--home", home, "--email", email, "--name", name, "--out",
                        tmp_path / f"{email}.p12", "--password-file", tmp_path / "pw"))  # fmt: skip
    return show_serial(int(result.out.split("certificate ")[1].split(",")[0], 16))


@pytest.fixture
def corp(sqlite_home: Path, tmp_path: Path, smtp_server: SMTPServer) -> dict[str, str]:
    """alice, bob, carol (no directory entry) and erin hold 20-day certificates; dave a
    full-length one. Returns each one's serial."""
    home = sqlite_home
    people = tmp_path / "people.csv"
    people.write_text(PEOPLE)
    ok(mailpki("directory", "import", "--home", home, people))
    for key, value in (
        ("keymanager.key_type", "p256"),
        ("keymanager.pool_size", "0"),
        ("web.base_url", BASE),
        ("smtp.host", smtp_server.host),
        ("smtp.port", str(smtp_server.port)),
    ):
        ok(mailpki("config", "set", "--home", home, key, value))
    (tmp_path / "pw").write_text("renewal-api-password-1\n")
    short_profile(home, True)
    names = {"alice": "Archer", "bob": "Baker", "carol": "Cook", "erin": "Eve"}
    serials = {
        who: enroll(home, tmp_path, f"{who}@example.com", f"{who.title()} {surname}")
        for who, surname in names.items()
    }
    short_profile(home, False)
    serials["dave"] = enroll(home, tmp_path, "dave@example.com", "Dave Dale")
    smtp_server.messages.clear()
    return serials


def test_expiring_lists_what_certs_expiring_lists_paged(
    corp: dict[str, str], sqlite_home: Path, tmp_path: Path, serve: Callable[[], str]
) -> None:
    auditor = token(sqlite_home, "reports", "auditor")
    base = serve()

    # Default: the portal's renewal window (lifecycle.renew_window_days, 60).
    status, _, page = call(base, "GET", "/certificates/expiring", auditor)
    assert status == 200, page
    assert isinstance(page, dict)
    assert page["within"] == 60 and page["total"] == 4 and page["offset"] == 0
    items = page["items"]
    assert [item["email"] for item in items] == [
        f"{who}@example.com" for who in ("alice", "bob", "carol", "erin")
    ]  # soonest first: in the order they were issued
    alice = items[0]
    assert alice["serial"] == corp["alice"] and len(alice["serial"]) == 32
    assert alice["days_left"] in (19, 20)
    assert alice["renewed"] is False and alice["renewed_by"] is None
    not_after = datetime.fromisoformat(alice["not_after"])
    assert timedelta(days=19) < not_after - datetime.now(UTC) <= timedelta(days=20)

    # The CLI lists the same certificates.
    listed = ok(mailpki("certs", "expiring", "--home", sqlite_home, "--within", "60")).out
    assert [line.split("\t")[0] for line in listed.splitlines()[1:]] == [
        item["serial"] for item in items
    ]

    # Further ahead, dave's full-length certificate is there too, last; paged.
    status, _, everything = call(base, "GET", "/certificates/expiring?within=3650", auditor)
    assert status == 200 and everything["total"] == 5  # type: ignore[index]
    assert everything["items"][-1]["serial"] == corp["dave"]  # type: ignore[index]
    status, _, second = call(
        base, "GET", "/certificates/expiring?within=3650&limit=2&offset=2", auditor
    )
    assert status == 200 and second["total"] == 5 and second["limit"] == 2  # type: ignore[index]
    assert [i["serial"] for i in second["items"]] == [corp["carol"], corp["erin"]]  # type: ignore[index]
    status, _, nothing = call(base, "GET", "/certificates/expiring?within=0", auditor)
    assert status == 200 and nothing["total"] == 0 and nothing["items"] == []  # type: ignore[index]

    # Renewed: still listed until it expires, with its successor.
    renewed = ok(mailpki("renew", "--home", sqlite_home, "--email", "alice@example.com",
                         "--out", tmp_path / "alice-new.p12"))  # fmt: skip
    new = show_serial(int(renewed.out.split("certificate ")[1].split(" ")[0], 16))
    status, _, page = call(base, "GET", "/certificates/expiring?within=60&limit=500", auditor)
    assert status == 200
    [old] = [i for i in page["items"] if i["serial"] == corp["alice"]]  # type: ignore[index]
    assert old["renewed"] is True and old["renewed_by"] == new


BAD_QUERIES = (
    "within=-1",
    "within=abc",
    "within=3651",
    "within=99999999999999999999999",
    "within=1.5",
    "within=",
    "within=%00",
    "limit=0",
    "limit=501",
    "offset=-1",
    "offset=10000001",
)


def test_expiring_bad_input_gets_the_stable_error_shape(
    sqlite_home: Path, serve: Callable[[], str]
) -> None:
    ops = token(sqlite_home, "ops", "operator")
    base = serve()
    for query in BAD_QUERIES:
        status, _, payload = call(base, "GET", f"/certificates/expiring?{query}", ops)
        assert status == 422, (query, payload)
        assert isinstance(payload, dict) and set(payload) == {"error"}
        assert set(payload["error"]) == {"code", "message"}
        assert payload["error"]["code"] == "invalid_request"
        assert payload["error"]["message"].startswith("query."), (query, payload)


def outbox_mails(smtp: SMTPServer, to: str, count: int) -> list[str]:
    deadline = time.monotonic() + 60  # a housekeeping cycle is 15 s
    while time.monotonic() < deadline:
        texts = [m.text for m in smtp.messages if to in m.rcpt_tos and "expires" in m["Subject"]]
        if len(texts) >= count:
            return texts
        time.sleep(0.5)
    raise AssertionError(f"{count} mail(s) to {to} expected, got {len(texts)}")


def test_renewal_notice_mails_a_one_time_link_and_refuses_what_the_portal_would_not_renew(
    corp: dict[str, str],
    sqlite_home: Path,
    tmp_path: Path,
    serve: Callable[[], str],
    smtp_server: SMTPServer,
) -> None:
    home = sqlite_home
    # bob has left (disabled in the directory; his certificate kept, so the notice is
    # what refuses him); erin's certificate is revoked.
    ok(mailpki("config", "set", "--home", home, "lifecycle.on_leave", "keep"))
    # The server's own lifecycle would notice these 20-day certificates too (30-day
    # threshold): only the API's notices are counted here.
    ok(mailpki("config", "set", "--home", home, "lifecycle.notice_days", "1"))
    (tmp_path / "leaver.csv").write_text(
        "login,mail,name,enabled\nbob,bob@example.com,Bob Baker,false\n"
    )
    ok(mailpki("directory", "import", "--home", home, tmp_path / "leaver.csv"))
    ops = token(home, "hr-sync", "operator")
    base = serve()
    status, _, _ = call(
        base, "POST", f"/certificates/{corp['erin']}/revoke", ops, {"reason": "keyCompromise"}
    )
    assert status == 200

    status, _, notice = call(base, "POST", f"/certificates/{corp['alice']}/renewal-notice", ops)
    assert status == 200, notice
    assert isinstance(notice, dict)
    assert set(notice) == {
        "serial", "email", "not_after", "days_left", "link", "queued", "note",
    }  # fmt: skip
    assert notice["serial"] == corp["alice"] and notice["email"] == "alice@example.com"
    assert notice["link"] is True and notice["queued"] is True and notice["days_left"] in (19, 20)
    [text] = outbox_mails(smtp_server, "alice@example.com", 1)
    assert corp["alice"] in text
    (link_token,) = LINK_RE.findall(text)
    instance = Instance.open(home)
    try:
        assert peek(instance.db, link_token).mail == "alice@example.com"  # a live one-time link
    finally:
        instance.close()

    # The serial may be given as the CLI accepts it (colons, lower case, 0x).
    carol = "0x" + ":".join(re.findall("..", corp["carol"].lower()))
    status, _, no_link = call(base, "POST", f"/certificates/{carol}/renewal-notice", ops)
    assert status == 200, no_link
    assert no_link["link"] is False and "portal" in no_link["note"]  # type: ignore[index]
    [carol_text] = outbox_mails(smtp_server, "carol@example.com", 1)
    assert f"{BASE}\n" in carol_text and not LINK_RE.search(carol_text)

    refusals = {
        corp["alice"]: (409, "already sent today"),
        corp["bob"]: (409, "leaver"),
        corp["erin"]: (409, "revoked"),
        corp["dave"]: (409, "lifecycle.renew_window_days"),
        "ABCDEF0123": (404, "no certificate"),
        "::": (400, "not a serial"),
        "F" * 64: (400, "not a serial"),
    }
    for serial, (code, words) in refusals.items():
        status, _, payload = call(base, "POST", f"/certificates/{serial}/renewal-notice", ops)
        assert status == code, (serial, payload)
        assert isinstance(payload, dict) and set(payload) == {"error"}
        assert words in payload["error"]["message"], payload
        assert (
            payload["error"]["code"]
            == {409: "conflict", 404: "not_found", 400: "bad_request"}[code]
        )
    for serial in ("nothex", "x" * 65, "12%0A34"):
        status, _, payload = call(base, "POST", f"/certificates/{serial}/renewal-notice", ops)
        assert status == 422 and payload["error"]["code"] == "invalid_request"  # type: ignore[index]

    # Renewed meanwhile: the old certificate is no longer the one to renew.
    ok(mailpki("renew", "--home", home, "--email", "dave@example.com",
               "--out", tmp_path / "dave-new.p12"))  # fmt: skip
    status, _, payload = call(base, "POST", f"/certificates/{corp['dave']}/renewal-notice", ops)
    assert status == 409 and "already renewed" in payload["error"]["message"]  # type: ignore[index]

    time.sleep(1)  # let a stray mail arrive before counting
    assert len([m for m in smtp_server.messages if "expires" in m["Subject"]]) == 2
    with sqlite3.connect(home / "mailpki.db") as conn:
        rows = conn.execute(
            "SELECT actor FROM audit_records WHERE event = 'renewal.noticed'"
        ).fetchall()
    assert rows == [("api:hr-sync",), ("api:hr-sync",)]
    assert mailpki("audit", "verify", "--home", home).code == 0
