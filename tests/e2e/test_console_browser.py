"""The operator console in headless Chromium against a real slapd (directory groups give
the roles): an operator logs on, reads the dashboard, searches (metacharacters stay
text), opens a person, revokes with the confirmation step, invites from a CSV with a bad
row; an auditor filters the audit log and sees the revocation under the operator's name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import bind_free_socket
from tests.e2e.test_enrollment_browser import add_openldap, make_home, ok, shot
from tests.fixtures.console_users import GROUP_SETTINGS, ConsoleAccount
from tests.fixtures.slapd import SlapdServer, clear_certificates
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration


def console_logon(page: Page, url: str, account: ConsoleAccount) -> None:
    page.goto(f"{url}/admin")
    form = page.get_by_role("form", name="Console logon")
    form.get_by_label("Login", exact=True).fill(account.login)
    form.get_by_label("Password", exact=True).fill(account.password)
    form.get_by_role("button", name="Log on to the console").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_an_operator_revokes_and_invites_and_an_auditor_reads_the_trail(
    page: Page,
    tmp_path: Path,
    openldap_server: SlapdServer,
    smtp_server: SMTPServer,
    serve_portal: Any,
    screenshots: Path,
    console_accounts: dict[str, ConsoleAccount],
) -> None:
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server, *GROUP_SETTINGS)
    add_openldap(home, openldap_server)
    ok(mailpki("enroll", "--home", home, "--user", "user00007", "--key-type", "p256",
               "--out", tmp_path / "u.p12"))  # fmt: skip
    [issued] = json.loads(ok(mailpki("certs", "list", "--home", home, "--json")).out)
    serial = str(issued["serial"])
    live = serve_portal(home, sock)
    try:
        console_logon(page, live.url, console_accounts["operator"])
        expect(page.locator("#certs-valid")).to_have_text("1")
        expect(page.locator("#audit-status")).to_contain_text("Verified")
        shot(page, screenshots, "80-console-dashboard")

        # Search: metacharacters of LDAP, SQL and HTML are searched for, as text.
        page.get_by_role("link", name="People", exact=True).click()
        for text in ("*)(uid=*", "' OR 1=1 --", "<script>x</script>", "%_\\"):
            page.get_by_label("Name, login, mail address or serial number").fill(text)
            page.get_by_role("button", name="Search").click()
            expect(page.locator("#no-people")).to_be_visible()
            expect(page.get_by_label("Name, login, mail address or serial number")).to_have_value(
                text
            )
        page.get_by_label("Name, login, mail address or serial number").fill("Dave (")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#people")).to_contain_text("Dave (Ops) O'Brien")
        page.get_by_label("Name, login, mail address or serial number").fill(serial)
        page.get_by_role("button", name="Search").click()
        expect(page.locator(".certificates")).to_contain_text("user00007@example.com")

        # The person's page, then revoke with a reason and the confirmation step.
        page.goto(f"{live.url}/admin/people/user00007")
        expect(page.locator("#entry")).to_contain_text("user00007@example.com")
        expect(page.locator(".certificates")).to_contain_text("delivered")
        shot(page, screenshots, "81-console-person")
        page.locator(".certificates a").first.click()
        page.get_by_label("Reason").select_option("keyCompromise")
        page.get_by_role("button", name="Revoke…").click()
        expect(page.get_by_role("heading", name="Revoke this certificate?")).to_be_visible()
        expect(page.locator("#revoke-reason")).to_have_text("keyCompromise")
        [listed] = json.loads(ok(mailpki("certs", "list", "--home", home, "--json")).out)
        assert listed["status"] == "valid"  # nothing changes before the confirmation
        shot(page, screenshots, "82-console-revoke-confirm")
        page.get_by_role("button", name="Yes, revoke it").click()
        expect(page.get_by_role("status")).to_contain_text("revoked: keyCompromise")
        expect(page.locator("#cert-status")).to_contain_text("revoked")

        # Invitations from a CSV: a line number for each bad row, the rest invited.
        csv_file = tmp_path / "people.csv"
        csv_file.write_text("login,note\nuser00011,ok\n,empty\nnobody-here,x\nuser00011,dup\n")
        page.get_by_role("link", name="Invite", exact=True).click()
        page.get_by_label("CSV file").set_input_files(str(csv_file))
        page.get_by_role("button", name="Upload and invite").click()
        outcome = page.locator("#invite-outcome")
        expect(outcome).to_contain_text("Invited: 1 (user00011)")
        problems = page.locator("#invite-problems")
        expect(problems).to_contain_text("line 3: no login")
        expect(problems).to_contain_text("line 4: nobody-here: not found in any directory")
        expect(problems).to_contain_text("line 5: user00011 is already on line 2")
        shot(page, screenshots, "83-console-invite-csv")
        page.get_by_role("button", name="Log out").click()

        # The auditor filters the audit log: the revocation, by the operator's name.
        console_logon(page, live.url, console_accounts["auditor"])
        page.get_by_role("link", name="Audit log", exact=True).click()
        page.get_by_label("Event").fill("cert.revoked")
        page.get_by_label("Actor contains").fill("console:")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#audit-count")).to_contain_text("1 records")
        expect(page.locator("table.audit")).to_contain_text("console:bob")
        page.get_by_label("Event").fill("invitation.")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("table.audit")).to_contain_text("invitation.sent")
        shot(page, screenshots, "84-console-audit")
        # The auditor reads but does not revoke.
        page.goto(f"{live.url}/admin/certificates/{serial}")
        expect(page.get_by_role("button", name="Revoke…")).to_have_count(0)
    finally:
        clear_certificates(openldap_server)
