"""The enrollment, as a person does it: in headless Chromium, against a real slapd and a
real SMTP server. Each page is saved as a screenshot (artefacts/screenshots/).

- invited by mail, logs on with the directory password, sees the form pre-filled from
  slapd, accepts, downloads the PKCS#12; it opens with the password shown, holds a
  certificate for that person, and the certificate is published in slapd;
- the same with a PIN from an HR import (and a password the person chooses);
- a request the rules do not approve is shown as waiting; the officer's decision is
  mailed, and after approval the person enrolls;
- a directory name with a script in it stays text.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from playwright.sync_api import Page, expect

from tests.e2e.conftest import bind_free_socket
from tests.fixtures.slapd import SlapdServer, clear_certificates
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import Result, mailpki

pytestmark = pytest.mark.integration

LINK_RE = re.compile(r"http://127\.0\.0\.1:\d+/enroll/[A-Za-z0-9_-]{43}")


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}\nstdout: {result.out}\nstderr: {result.err}"
    return result


def make_home(tmp_path: Path, sock_port: int, smtp: SMTPServer, *settings: tuple[str, str]) -> Path:
    home = tmp_path / "corp"
    ok(
        mailpki(
            "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
            "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
        )
    )  # fmt: skip
    for key, value in [
        ("web.base_url", f"http://127.0.0.1:{sock_port}"),
        # CDP/AIA need a DNS name (S/MIME BR; pkilint refuses an IP address).
        ("web.pki_base_url", "http://pki.example.com"),
        ("smtp.host", smtp.host),
        ("smtp.port", str(smtp.port)),
        ("keymanager.pool_size", "0"),
        *settings,
    ]:
        ok(mailpki("config", "set", "--home", home, key, value))
    return home


def add_openldap(home: Path, server: SlapdServer) -> None:
    ok(
        mailpki(
            "directory", "add", "corp", "--home", home, "--url", server.ldaps_url,
            "--base-dn", server.base_dn, "--bind-dn", server.bind_dn,
            "--bind-password-file", server.bind_password_file, "--flavour", "openldap",
            *[arg for d in server.domains for arg in ("--domain", d)],
            "--ca-file", server.ca_file,
        )
    )  # fmt: skip


def add_person(home: Path, folder: Path, row: str) -> None:
    """One person into the embedded directory: `row` after the header below."""
    people = folder / "people.csv"
    people.write_text("login,mail,name,given_name,surname,site,enabled\n" + row + "\n")
    ok(mailpki("directory", "import", "--home", home, people))


def import_pin(home: Path, folder: Path, employee_id: str, mail: str, name: str, pin: str) -> None:
    pins = folder / "pins.csv"
    pins.write_text(f"employee_id,mail,name,pin\n{employee_id},{mail},{name},{pin}\n")
    ok(mailpki("pins", "import", "--home", home, pins))


def pin_logon(page: Page, employee_id: str, pin: str) -> None:
    page.get_by_label("Employee id (or mail address)").fill(employee_id)
    page.get_by_label("PIN", exact=True).fill(pin)
    page.get_by_role("button", name="Log on with PIN").click()


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def mails_to(smtp: SMTPServer, address: str) -> list[Any]:
    return [m for m in smtp.messages if address in m.rcpt_tos]


def open_pkcs12(path: Path, password: str) -> x509.Certificate:
    """Open the file with openssl (an independent reader) and with cryptography."""
    pem = subprocess.run(
        ["openssl", "pkcs12", "-in", str(path), "-nokeys", "-clcerts", "-passin", f"pass:{password}"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    certificate = x509.load_pem_x509_certificate(pem)
    key, cert, _ = pkcs12.load_key_and_certificates(path.read_bytes(), password.encode())
    assert key is not None and cert == certificate
    assert key.public_key().public_bytes(Encoding.DER, _spki()) == certificate.public_key(
    ).public_bytes(Encoding.DER, _spki())  # fmt: skip
    return certificate


def _spki() -> Any:
    from cryptography.hazmat.primitives.serialization import PublicFormat

    return PublicFormat.SubjectPublicKeyInfo


def mail_of(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.RFC822Name)


def published(server: SlapdServer, dn: str, der: bytes, timeout: float = 15.0) -> bool:
    """Whether `der` shows up in the entry's userCertificate;binary (publishing runs
    right after the response, in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = ldap3.Connection(
            ldap3.Server(server.url), server.admin_dn, server.admin_password, auto_bind=True
        )
        try:
            conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["userCertificate;binary"])
            values = conn.entries[0]["userCertificate;binary"].values if conn.entries else []
        finally:
            conn.unbind()
        if der in values:
            return True
        time.sleep(0.25)
    return False


def download(page: Page, tmp_path: Path, name: str) -> Path:
    with page.expect_download() as info:
        page.get_by_role("link", name=re.compile(f"Download {re.escape(name)}")).click()
    target = tmp_path / name
    info.value.save_as(target)
    assert info.value.suggested_filename == name
    return target


@pytest.fixture
def no_dialogs(page: Page) -> list[str]:
    """Any alert/confirm a page opens is recorded (and would be a script that ran)."""
    opened: list[str] = []

    def record(dialog: Any) -> None:
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    return opened


def test_invited_person_enrolls_with_the_directory_password(
    page: Page,
    tmp_path: Path,
    openldap_server: SlapdServer,
    smtp_server: SMTPServer,
    serve_portal: Any,
    screenshots: Path,
    no_dialogs: list[str],
) -> None:
    alice = openldap_server.users["alice"]
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server)
    add_openldap(home, openldap_server)
    ok(mailpki("invite", "--home", home, "alice"))
    [invitation] = mails_to(smtp_server, "alice@example.com")
    [link] = LINK_RE.findall(invitation.text)
    live = serve_portal(home, sock)
    try:
        page.goto(link)
        expect(page.locator("#invited")).to_contain_text("Alice Liddell (alice@example.com)")
        shot(page, screenshots, "01-invitation-logon")
        page.get_by_label("Login", exact=True).fill("alice")
        page.get_by_label("Password", exact=True).fill("not-her-password")
        page.get_by_role("button", name="Log on", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text("Wrong login or password")
        shot(page, screenshots, "02-logon-refused")
        page.get_by_label("Password", exact=True).fill(alice.password or "")
        page.get_by_role("button", name="Log on", exact=True).click()

        # The form, as the directory has her.
        expect(page.locator("#f-name")).to_have_text("Alice Liddell")
        expect(page.locator("#f-mail")).to_have_text("alice@example.com")
        expect(page.locator("#f-org")).to_have_text("Example Corp")
        expect(page.locator("#f-site")).to_have_text("Berlin")
        shot(page, screenshots, "03-form")
        page.get_by_role("button", name="Accept and make my certificate").click()
        # Not accepted: the browser itself holds the form back (the server checks again).
        expect(page.locator("input[name=accept]:invalid")).to_have_count(1)
        page.get_by_label("I have read this and accept it").check()
        page.get_by_role("button", name="Accept and make my certificate").click()

        expect(page.get_by_role("heading", name="Your certificate is ready")).to_be_visible()
        password = page.locator("#generated-password").inner_text().strip()
        assert len(password) >= 20
        shot(page, screenshots, "04-download")
        p12 = download(page, tmp_path, "alice@example.com.p12")
        certificate = open_pkcs12(p12, password)
        assert mail_of(certificate) == ["alice@example.com"]
        assert published(openldap_server, alice.dn, certificate.public_bytes(Encoding.DER))

        # The link worked once, and the password is not shown again.
        page.goto(f"{live.url}/done")
        expect(page.get_by_text("alice@example.com.p12 downloaded")).to_be_visible()
        assert password not in page.content()
        page.get_by_role("link", name=re.compile("set it up")).click()
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        shot(page, screenshots, "05-tutorial")

        # The invitation is used up.
        page.goto(link)
        expect(page.get_by_role("alert")).to_contain_text("already used")
        shot(page, screenshots, "06-invitation-used")
    finally:
        clear_certificates(openldap_server)
    assert no_dialogs == []


def test_person_enrolls_with_an_hr_pin_and_a_chosen_password(
    page: Page,
    tmp_path: Path,
    openldap_server: SlapdServer,
    smtp_server: SMTPServer,
    serve_portal: Any,
    screenshots: Path,
) -> None:
    bob = openldap_server.users["bob"]
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server)
    add_openldap(home, openldap_server)
    import_pin(home, tmp_path, "E-2001", "bob@example.com", "Bob Builder", "73918264")
    live = serve_portal(home, sock)
    try:
        page.goto(live.url)
        page.get_by_label("Employee id (or mail address)").fill("E-2001")
        page.get_by_label("PIN", exact=True).fill("73918264")
        shot(page, screenshots, "11-pin-logon")
        page.get_by_role("button", name="Log on with PIN").click()
        expect(page.locator("#f-name")).to_have_text("Bob Builder")
        expect(page.locator("#f-site")).to_have_text("London")

        page.get_by_label("A password I choose").check()
        page.get_by_label(re.compile(r"^Password \(at least")).fill("bob-builder-1")
        page.get_by_label("The same again").fill("bob-builder-1")
        page.get_by_label("I have read this and accept it").check()
        page.get_by_role("button", name="Accept and make my certificate").click()
        expect(page.get_by_role("alert")).to_contain_text("password")
        shot(page, screenshots, "12-weak-password")

        chosen = "Quiet-Harbour-7-Lanterns"
        page.get_by_label("A password I choose").check()
        page.get_by_label(re.compile(r"^Password \(at least")).fill(chosen)
        page.get_by_label("The same again").fill(chosen)
        page.get_by_label("Older format").check()
        page.get_by_label("I have read this and accept it").check()
        page.get_by_role("button", name="Accept and make my certificate").click()
        expect(page.get_by_role("heading", name="Your certificate is ready")).to_be_visible()
        assert page.locator("#generated-password").count() == 0
        shot(page, screenshots, "13-download-chosen-password")
        p12 = download(page, tmp_path, "bob@example.com.p12")
        certificate = open_pkcs12(p12, chosen)
        assert mail_of(certificate) == ["bob@example.com"]
        # The legacy format: 3DES key bag (old Windows, macOS and gpgsm 2.2 read it).
        info = subprocess.run(
            ["openssl", "pkcs12", "-in", str(p12), "-info", "-noout", "-passin", f"pass:{chosen}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info.stderr + info.stdout
        assert published(openldap_server, bob.dn, certificate.public_bytes(Encoding.DER))

        # The PIN was one-time.
        page.get_by_role("button", name=re.compile("Log out")).click()
        pin_logon(page, "E-2001", "73918264")
        expect(page.get_by_role("alert")).to_contain_text("PIN")
    finally:
        clear_certificates(openldap_server)


def test_queued_request_waits_an_officer_approves_in_the_console_and_it_is_mailed(
    page: Page,
    tmp_path: Path,
    openldap_server: SlapdServer,
    smtp_server: SMTPServer,
    serve_portal: Any,
    screenshots: Path,
) -> None:
    dave, alice = openldap_server.users["dave"], openldap_server.users["alice"]
    sock = bind_free_socket()
    home = make_home(
        tmp_path,
        sock.getsockname()[1],
        smtp_server,
        ("approval.auto", "false"),
        ("portal.officer_groups", "pki-admins"),
    )
    add_openldap(home, openldap_server)
    live = serve_portal(home, sock)
    try:
        page.goto(live.url)
        page.get_by_label("Login", exact=True).fill("dave")
        page.get_by_label("Password", exact=True).fill(dave.password or "")
        page.get_by_role("button", name="Log on", exact=True).click()
        expect(page.locator("#f-name")).to_have_text("Dave (Ops) O'Brien")
        page.get_by_label("I have read this and accept it").check()
        page.get_by_role("button", name="Accept and make my certificate").click()
        expect(
            page.get_by_role("heading", name="Your request is waiting for approval")
        ).to_be_visible()
        request_id = page.locator("#queued strong").inner_text()
        shot(page, screenshots, "21-waiting")
        assert ok(mailpki("certs", "list", "--home", home)).out.count("dave@example.com") == 0

        # Dave is no officer; Alice (pki-admins) decides in the console.
        page.goto(f"{live.url}/admin")
        expect(page.get_by_role("alert")).to_contain_text("for certificate officers, operators")
        officer = page.context.browser.new_context()  # type: ignore[union-attr]
        console = officer.new_page()
        console.goto(f"{live.url}/admin")
        expect(console.get_by_role("heading", name="Operator console")).to_be_visible()
        logon = console.get_by_role("form", name="Console logon")
        logon.get_by_label("Login", exact=True).fill("alice")
        logon.get_by_label("Password", exact=True).fill(alice.password or "")
        console.get_by_role("button", name="Log on to the console").click()
        expect(console.locator("#requests-waiting")).to_have_text("1")
        console.get_by_role("link", name="Requests", exact=True).click()
        row = console.locator(f"#request-{request_id}")
        expect(row).to_contain_text("dave")
        expect(row).to_contain_text("automatic approval is off")
        shot(console, screenshots, "22-officer-console")
        row.get_by_label("Note (optional)").fill("known to the Madrid office")
        row.get_by_role("button", name="Approve").click()
        expect(console.get_by_role("status")).to_contain_text(
            f"Request {request_id} (dave) approved"
        )
        expect(console.locator("#no-requests")).to_be_visible()
        officer.close()
        [decided] = mails_to(smtp_server, "dave@example.com")
        assert "known to the Madrid office" in decided.text
        assert "approved" in decided.text and live.url in decided.text

        page.get_by_role("button", name=re.compile("Log out")).click()
        page.get_by_label("Login", exact=True).fill("dave")
        page.get_by_label("Password", exact=True).fill(dave.password or "")
        page.get_by_role("button", name="Log on", exact=True).click()
        page.get_by_label("I have read this and accept it").check()
        page.get_by_role("button", name="Accept and make my certificate").click()
        expect(page.get_by_role("heading", name="Your certificate is ready")).to_be_visible()
        password = page.locator("#generated-password").inner_text().strip()
        certificate = open_pkcs12(download(page, tmp_path, "dave@example.com.p12"), password)
        assert mail_of(certificate) == ["dave@example.com"]
        listed = ok(mailpki("requests", "list", "--home", home)).out
        assert "enrolled" in listed
    finally:
        clear_certificates(openldap_server)


def test_dual_key_gives_two_files_and_only_the_encryption_key_is_escrowed(
    page: Page, tmp_path: Path, smtp_server: SMTPServer, serve_portal: Any, screenshots: Path
) -> None:
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server)
    add_person(home, tmp_path, "erin,erin@example.com,Erin Example,Erin,Example,Lyon,true")
    import_pin(home, tmp_path, "E-3001", "erin@example.com", "Erin Example", "55120938")
    live = serve_portal(home, sock)
    page.goto(live.url)
    pin_logon(page, "E-3001", "55120938")
    page.get_by_label(re.compile("Two keys")).check()
    page.get_by_label("I have read this and accept it").check()
    page.get_by_role("button", name="Accept and make my certificate").click()
    expect(page.get_by_role("heading", name="Your certificate is ready")).to_be_visible()
    shot(page, screenshots, "31-dual-key")
    password = page.locator("#generated-password").inner_text().strip()
    encryption = open_pkcs12(download(page, tmp_path, "erin@example.com-encryption.p12"), password)
    signing = open_pkcs12(download(page, tmp_path, "erin@example.com-signing.p12"), password)
    usage_enc = encryption.extensions.get_extension_for_class(x509.KeyUsage).value
    usage_sig = signing.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage_sig.digital_signature and not usage_sig.key_encipherment
    assert not usage_enc.digital_signature
    escrowed = ok(mailpki("keys", "list", "--home", home)).out
    assert f"{encryption.serial_number:x}".upper() in escrowed.upper()
    assert f"{signing.serial_number:x}".upper() not in escrowed.upper()


def test_a_script_in_a_directory_name_stays_text(
    page: Page,
    tmp_path: Path,
    smtp_server: SMTPServer,
    serve_portal: Any,
    screenshots: Path,
    no_dialogs: list[str],
) -> None:
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server)
    add_person(
        home,
        tmp_path,
        'mallory,mallory@example.com,<script>alert(1)</script>,Mallory,Evil,"<img src=x onerror=alert(2)>",true',
    )
    import_pin(home, tmp_path, "E-666", "mallory@example.com", "Mallory", "66612345")
    live = serve_portal(home, sock)
    page.goto(live.url)
    pin_logon(page, "E-666", "66612345")
    expect(page.locator("#f-name")).to_have_text("<script>alert(1)</script>")
    expect(page.locator("#f-site")).to_have_text("<img src=x onerror=alert(2)>")
    assert page.locator("main script, main img[src='x']").count() == 0
    shot(page, screenshots, "41-xss-name-is-text")
    assert no_dialogs == []


def test_keyboard_only_on_a_phone_sized_screen(
    page: Page, tmp_path: Path, smtp_server: SMTPServer, serve_portal: Any, screenshots: Path
) -> None:
    """Logon, form and download with the keyboard alone (Tab, typing, Space, Enter), on a
    375-pixel-wide screen where nothing may scroll sideways."""
    sock = bind_free_socket()
    home = make_home(tmp_path, sock.getsockname()[1], smtp_server, ("portal.logon", "pin"))
    add_person(home, tmp_path, "kai,kai@example.com,Kai Keyboard,Kai,Keyboard,Oslo,true")
    import_pin(home, tmp_path, "E-4001", "kai@example.com", "Kai Keyboard", "40017788")
    live = serve_portal(home, sock)
    page.set_viewport_size({"width": 375, "height": 780})

    def fits() -> bool:
        return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))

    page.goto(live.url)
    assert fits()
    shot(page, screenshots, "61-phone-logon")
    # The skip link comes first, then the header links; Tab until the employee id field.
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "employee":
            break
    assert page.evaluate("document.activeElement.id") == "employee"
    page.keyboard.type("E-4001")
    page.keyboard.press("Tab")
    page.keyboard.type("40017788")
    page.keyboard.press("Enter")
    expect(page.locator("#f-name")).to_have_text("Kai Keyboard")
    assert fits()
    shot(page, screenshots, "62-phone-form")
    page.locator("input[name=accept]").focus()
    page.keyboard.press("Space")
    expect(page.locator("input[name=accept]")).to_be_checked()
    page.keyboard.press("Tab")  # to the submit button
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Your certificate is ready")).to_be_visible()
    assert fits()
    shot(page, screenshots, "63-phone-download")
    page.get_by_role("link", name=re.compile("Download")).focus()
    with page.expect_download() as info:
        page.keyboard.press("Enter")
    assert info.value.suggested_filename == "kai@example.com.p12"
