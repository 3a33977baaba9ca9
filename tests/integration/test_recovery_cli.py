"""Key escrow and recovery end to end, through the CLI and the real openssl/gpgsm.

Enrollment escrows the key before the PKCS#12 exists; a recovery needs a signed request
by a recovery admin, approvals by two other officers, and a fetch by the requester; the
Key Recovery Service refuses (and logs) every attack on that flow; unusual recoveries
alert a second contact by mail and are held until confirmed; `recovery reissue` revokes
and replaces every key a suspected admin recovered.

Most tests share one instance (`world`, module scope) whose admins never change; each
test makes its own requests (and its own users or admins when it alters them), so the
tests are independent of their order.
"""

from __future__ import annotations

import base64
import email
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import ocsp
from sqlalchemy import select

from mailpki.ca.serials import show_serial
from mailpki.cms.signed import sign
from mailpki.errors import RecoveryRefused
from mailpki.instance.instance import Instance
from mailpki.instance.recovery_admin import AdminCredential, signed_message
from mailpki.recovery.admission import ocsp_nonce
from mailpki.recovery.protocol import Action, Message, new_nonce
from mailpki.recovery.service import RecoveryService
from mailpki.store.models import AuditRecord, EscrowedKey, OutboxMessage
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import Result, mailpki, make_csr, openssl

pytestmark = pytest.mark.integration

NEW_PASSWORD = "a-new-password-for-the-recovered-p12"
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
# The shared instance recovers many keys by one admin: the anomaly rules would
# (rightly) hold them, so its service gets limits no test reaches.
RELAXED = {
    "alerts.per_admin_hour": "10000",
    "alerts.per_admin_day": "100000",
    "alerts.total_day": "1000000",
    "alerts.average_minimum": "10000",
}


# -- helpers ------------------------------------------------------------------------------


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}\nstdout: {result.out}\nstderr: {result.err}"
    return result


def refused(result: Result, reason: str, code: int | None = None) -> str:
    """The command failed with exactly one line on stderr that gives `reason`."""
    assert result.code != 0, f"expected a refusal, got exit 0: {result.out}"
    if code is not None:
        assert result.code == code, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), lines[0]
    assert reason in lines[0], lines[0]
    return lines[0]


def write_password(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def shown_password(output: str) -> str:
    found = re.findall(r"PKCS#12 password \(shown once, not stored\): (\S+)", output)
    assert len(found) == 1, output
    return found[0]


def add_admin(home: Path, folder: Path, name: str, role: str) -> tuple[Path, str, Path]:
    """(PKCS#12, serial, password file) of a new admin. The password is the generated
    one: a given password gets 600,000 PBKDF2 rounds, which would make every signed
    command of these tests slow."""
    out = folder / f"{name}-{role}.p12"
    result = ok(
        mailpki(
            "admin", "add", "--home", home, "--name", f"{name.title()} Admin",
            "--email", f"{name}@example.com", "--role", role, "--out", out,
        )
    )  # fmt: skip
    match = re.search(rf"{role} certificate ([0-9A-F]+), PKCS#12 written", result.out)
    assert match, result.out
    pw = write_password(folder / f"{name}-{role}.pw", shown_password(result.out))
    return out, stored_serial(match.group(1)), pw


@dataclass(frozen=True)
class Enrolled:
    p12: Path
    serial: str
    password: str  # the generated one, as printed
    result: Result


def enroll(home: Path, folder: Path, name: str, *extra: str | Path) -> Enrolled:
    out = folder / f"{name}.p12"
    result = ok(
        mailpki(
            "enroll", "--home", home, "--email", f"{name}@example.com",
            "--name", f"{name.title()} Smith", "--out", out, *extra,
        )
    )  # fmt: skip
    match = re.search(r"example\.com: certificate ([0-9A-F]+), key escrowed", result.out)
    assert match, result.out
    return Enrolled(out, stored_serial(match.group(1)), shown_password(result.out), result)


def load_p12(path: Path, password: str) -> tuple[Any, x509.Certificate]:
    key, cert, _ = pkcs12.load_key_and_certificates(path.read_bytes(), password.encode())
    assert key is not None and cert is not None
    return key, cert


def private_der(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def stored_serial(printed: str) -> str:
    """The serial as the service keeps it (no leading zeros) from the zero-padded print."""
    return format(int(printed, 16), "X")


def cert_serial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "X")


def cert_emails(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.RFC822Name)


def key_usage(cert: x509.Certificate) -> set[str]:
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    names = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign",
    )  # fmt: skip
    return {name for name in names if getattr(ku, name)}


def keys_list(home: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads(ok(mailpki("keys", "list", "--home", home, "--json")).out)
    return {stored_serial(row["serial"]): row for row in rows}


def certs_list(home: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads(ok(mailpki("certs", "list", "--home", home, "--json")).out)
    return {stored_serial(row["serial"]): row for row in rows}


def requests_of(home: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads(ok(mailpki("recovery", "list", "--home", home, "--json")).out)
    return {row["request_id"]: row for row in rows}


def outbox_mails(home: Path) -> list[EmailMessage]:
    folder = home / "outbox"
    if not folder.is_dir():
        return []
    return [
        email.message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for path in sorted(folder.glob("*.eml"))
    ]


def body_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def krs_records(home: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The recovery service's own audit log: {seq, event, actor, data}."""
    service = RecoveryService.open(home / "krs")
    try:
        with service.db.session() as session:
            query = select(AuditRecord).order_by(AuditRecord.seq)
            if event is not None:
                query = query.where(AuditRecord.event == event)
            return [
                {"seq": r.seq, "event": r.event, "actor": r.actor, "data": json.loads(r.data)}
                for r in session.scalars(query)
            ]
    finally:
        service.close()


def instance_records(home: Path, event: str | None = None) -> list[dict[str, Any]]:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            query = select(AuditRecord).order_by(AuditRecord.seq)
            if event is not None:
                query = query.where(AuditRecord.event == event)
            return [
                {"event": r.event, "actor": r.actor, "data": json.loads(r.data), "raw": r.data}
                for r in session.scalars(query)
            ]
    finally:
        instance.close()


class Refusals:
    """New `recovery.refused` records in the service's log since this was made."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.start = max((r["seq"] for r in krs_records(home)), default=0)

    def new(self) -> list[dict[str, Any]]:
        return [r for r in krs_records(self.home, "recovery.refused") if r["seq"] > self.start]

    def expect_one(self, reason: str, actor: str | None = None) -> dict[str, Any]:
        found = self.new()
        assert len(found) == 1, found
        assert reason in found[0]["data"]["reason"], found[0]
        if actor is not None:
            assert found[0]["actor"] == actor, found[0]
        return found[0]


def service_log_intact(home: Path) -> None:
    result = ok(mailpki("recovery-service", "verify", "--home", home / "krs"))
    assert "recovery audit log intact" in result.out


def init_instance(target: Path, database: str | None = None) -> Path:
    args: list[str | Path] = [
        "init", "--home", target, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    ]  # fmt: skip
    if database:
        args += ["--database", database]
    ok(mailpki(*args))
    return target


# -- a recovery team ----------------------------------------------------------------------


@dataclass
class Team:
    """An instance and its admins by name: PKCS#12, password file, certificate serial."""

    home: Path
    folder: Path
    p12: dict[str, Path] = field(default_factory=dict)
    pw: dict[str, Path] = field(default_factory=dict)
    serial: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, role: str) -> None:
        self.p12[name], self.serial[name], self.pw[name] = add_admin(
            self.home, self.folder, name, role
        )

    def extended(self, folder: Path) -> Team:
        """The same admins, and new ones made in `folder` stay out of this team."""
        return Team(self.home, folder, dict(self.p12), dict(self.pw), dict(self.serial))

    def run(self, *args: str | Path, admin: str, pw: Path | None = None) -> Result:
        return mailpki(
            "recovery", *args, "--home", self.home, "--p12", self.p12[admin],
            "--password-file", pw or self.pw[admin],
        )  # fmt: skip

    def request(self, admin: str, user: str) -> str:
        result = ok(self.run("request", "--email", f"{user}@example.com", admin=admin))
        request_id = result.out.strip()
        assert REQUEST_ID.fullmatch(request_id), result.out
        return request_id

    def approve(self, request_id: str, officer: str) -> Result:
        return self.run("approve", request_id, admin=officer)

    def fetch(self, request_id: str, admin: str, out: Path, *extra: str | Path) -> Result:
        return self.run("fetch", request_id, "--out", out, *extra, admin=admin)

    def approved(self, admin: str, user: str) -> str:
        request_id = self.request(admin, user)
        ok(self.approve(request_id, "dave"))
        ok(self.approve(request_id, "erin"))
        return request_id

    def recover(self, admin: str, user: str, out: Path) -> str:
        request_id = self.approved(admin, user)
        ok(self.fetch(request_id, admin, out))
        assert out.is_file()
        return request_id


def team_for(home: Path, folder: Path, roles: dict[str, str]) -> Team:
    team = Team(home, folder)
    for name, role in roles.items():
        team.add(name, role)
    return team


CORE_TEAM = {
    "carol": "recovery-admin",
    "dave": "recovery-officer",
    "erin": "recovery-officer",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Team:
    """One SQLite instance: admins carol and casey, officers dave and erin, auditor
    frank; users bob and alice enrolled. Tests add their own people, never change these."""
    folder = tmp_path_factory.mktemp("world")
    home = init_instance(folder / "corp")
    for key, value in RELAXED.items():
        ok(mailpki("recovery-service", "config", "set", "--home", home / "krs", key, value))
    team = team_for(home, folder, {**CORE_TEAM, "casey": "recovery-admin", "frank": "auditor"})
    for user in ("bob", "alice"):
        enroll(home, folder, user)
    return team


# -- 1. enrollment ------------------------------------------------------------------------


def test_enroll_delivers_a_p12_openssl_accepts_with_the_key_escrowed(
    home: Path, tmp_path: Path
) -> None:
    enrolled = enroll(home, tmp_path, "bob")
    p12, serial, password, result = (
        enrolled.p12,
        enrolled.serial,
        enrolled.password,
        enrolled.result,
    )
    assert result.out.count(password) == 1 and password not in result.err
    pw = write_password(tmp_path / "pw", password)

    dump = openssl("pkcs12", "-in", p12, "-passin", f"file:{pw}", "-nodes").stdout
    assert "PRIVATE KEY-----" in dump and "BEGIN CERTIFICATE" in dump
    key_pem, cert_pem = tmp_path / "key.pem", tmp_path / "cert.pem"
    common = ("-in", p12, "-passin", f"file:{pw}")
    openssl("pkcs12", *common, "-nodes", "-nocerts", "-out", key_pem)
    openssl("pkcs12", *common, "-nokeys", "-clcerts", "-out", cert_pem)
    key_public = openssl("pkey", "-in", key_pem, "-pubout").stdout
    cert_public = openssl("x509", "-in", cert_pem, "-pubkey", "-noout").stdout
    assert key_public == cert_public and "PUBLIC KEY" in key_public
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    assert cert_serial(cert) == serial
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert cert_emails(cert) == ["bob@example.com"]
    ca = home / "ca"
    for purpose in ("smimeencrypt", "smimesign"):
        verified = openssl(
            "verify", "-purpose", purpose, "-CAfile", ca / "root.pem",
            "-untrusted", ca / "issuing.pem", cert_pem,
        )  # fmt: skip
        assert verified.stdout.strip().endswith(": OK"), verified.stdout

    # The password was shown once and kept nowhere: no file of the home, no database row.
    secret = password.encode()
    files = [path for path in home.rglob("*") if path.is_file()]
    assert files
    for path in files:
        assert secret not in path.read_bytes(), path
    records = instance_records(home)
    assert {"key.escrowed", "key.delivered"} <= {r["event"] for r in records}
    assert all(password not in r["raw"] for r in records)
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            bodies = [m.body + m.subject for m in session.scalars(select(OutboxMessage))]
    finally:
        instance.close()
    assert bodies and all(password not in body for body in bodies)

    row = keys_list(home)[serial]
    assert (row["email"], row["state"], row["key_type"]) == (
        "bob@example.com",
        "delivered",
        "rsa2048",
    )
    assert row["delivered_at"] is not None

    notices = [
        m for m in outbox_mails(home) if m["Subject"] == "Your encryption key has been escrowed"
    ]
    assert len(notices) == 1
    assert notices[0]["To"] == "bob@example.com"
    assert serial in body_of(notices[0])


# -- 2. gpgsm -----------------------------------------------------------------------------


@pytest.fixture
def gpgsm_env() -> Iterator[dict[str, str]]:
    """A throwaway GNUPGHOME for gpgsm (short path: the agent's socket lives in it)."""
    binary, gpgconf = shutil.which("gpgsm"), shutil.which("gpgconf")
    if binary is None or gpgconf is None:
        pytest.skip("gpgsm is not installed")
    gnupghome = Path(tempfile.mkdtemp(prefix="gpgsm-"))
    gnupghome.chmod(0o700)
    (gnupghome / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    (gnupghome / "gpgsm.conf").write_text("disable-crl-checks\n")
    env = {**os.environ, "GNUPGHOME": str(gnupghome), "LC_ALL": "C"}
    # Started here, not on gpgsm's first call: an agent auto-started under a loaded
    # machine can miss gpgsm's short connect timeout (a flake seen once).
    subprocess.run([gpgconf, "--launch", "gpg-agent"], env=env, capture_output=True, timeout=60)
    try:
        yield env
    finally:
        subprocess.run([gpgconf, "--kill", "all"], env=env, capture_output=True, timeout=30)
        shutil.rmtree(gnupghome, ignore_errors=True)


def gpgsm(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gpgsm", "--batch", *args], input=stdin, capture_output=True, text=True,
        timeout=60, env=env,
    )  # fmt: skip


def test_enroll_legacy_p12_imports_into_gpgsm(
    world: Team, gpgsm_env: dict[str, str], tmp_path: Path
) -> None:
    gus = enroll(world.home, tmp_path, "gus", "--legacy-p12")
    imported = gpgsm(
        gpgsm_env, "--pinentry-mode", "loopback", "--passphrase-fd", "0", "--import",
        str(gus.p12), stdin=gus.password + "\n",
    )  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "secret keys imported: 1" in imported.stderr + imported.stdout
    listing = gpgsm(gpgsm_env, "--list-secret-keys")
    assert listing.returncode == 0, listing.stderr
    assert "gus@example.com" in listing.stdout
    colons = gpgsm(gpgsm_env, "--with-colons", "--list-secret-keys").stdout
    fingerprints = {line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:")}
    _, cert = load_p12(gus.p12, gus.password)
    assert cert_serial(cert) == gus.serial
    assert fingerprints == {cert.fingerprint(hashes.SHA1()).hex().upper()}


# -- 3. dual key --------------------------------------------------------------------------


def test_dual_key_escrows_only_the_encryption_key(home: Path, tmp_path: Path) -> None:
    csr = make_csr(tmp_path, "bob-sign", key="ec")
    bob = enroll(home, tmp_path, "bob", "--dual-key", "--signing-csr", csr)
    serial = bob.serial
    signing_path = tmp_path / "bob-signing.pem"
    assert f"not escrowed): {signing_path}" in bob.result.out

    key, encryption = load_p12(bob.p12, bob.password)
    assert cert_serial(encryption) == serial
    assert key.public_key() == encryption.public_key()
    assert key_usage(encryption) == {"key_encipherment"}
    signing = x509.load_pem_x509_certificate(signing_path.read_bytes())
    signing_serial = cert_serial(signing)
    assert signing_serial != serial
    own_key = serialization.load_pem_private_key((tmp_path / "bob-sign.key").read_bytes(), None)
    assert signing.public_key() == own_key.public_key()
    # Signing only: digitalSignature, plus the nonRepudiation the strict signing profile
    # adds (S/MIME BR 7.1.2.3 e allows it); nothing that decrypts or agrees keys.
    assert key_usage(signing) == {"digital_signature", "content_commitment"}
    for cert in (encryption, signing):
        assert cert_emails(cert) == ["bob@example.com"]

    listed = certs_list(home)
    assert listed[serial]["profile"] == "sponsored-strict-encryption"
    assert listed[signing_serial]["profile"] == "sponsored-strict-signing"
    # Only the central key is escrowed; the user's own signing key never left them.
    escrowed = keys_list(home)
    assert list(escrowed) == [serial]
    assert escrowed[serial]["state"] == "delivered"

    ca = home / "ca"
    enc_pem = tmp_path / "enc.pem"
    enc_pem.write_bytes(encryption.public_bytes(serialization.Encoding.PEM))
    for pem, purpose, allowed in (
        (enc_pem, "smimeencrypt", True),
        (enc_pem, "smimesign", False),
        (signing_path, "smimesign", True),
        (signing_path, "smimeencrypt", False),
    ):
        verified = openssl(
            "verify", "-purpose", purpose, "-CAfile", ca / "root.pem",
            "-untrusted", ca / "issuing.pem", pem, check=False,
        )  # fmt: skip
        assert (verified.returncode == 0) == allowed, (pem.name, purpose, verified.stdout)


# -- 4. a full recovery -------------------------------------------------------------------


def test_full_recovery(home: Path, tmp_path: Path) -> None:
    team = team_for(home, tmp_path, {**CORE_TEAM, "frank": "auditor"})
    bob = enroll(home, tmp_path, "bob")
    serial = bob.serial

    request = team.run(
        "request", "--email", "bob@example.com", "--reason", "lost laptop", admin="carol"
    )
    ok(request)
    request_id = request.out.strip()
    assert REQUEST_ID.fullmatch(request_id), request.out
    assert "needs 2 approvals" in request.err
    pending = requests_of(home)[request_id]
    assert (pending["state"], pending["approved_by"], pending["target_serial"]) == (
        "pending", [], serial,
    )  # fmt: skip

    assert "1 of 2 approvals (pending)" in ok(team.approve(request_id, "dave")).out
    assert "2 of 2 approvals (approved)" in ok(team.approve(request_id, "erin")).out
    out = tmp_path / "recovered.p12"
    new_pw = write_password(tmp_path / "new-pw", NEW_PASSWORD)
    fetched = ok(team.fetch(request_id, "carol", out, "--new-password-file", new_pw))
    assert (
        f"recovered the key of bob@example.com (certificate {show_serial(serial)})" in fetched.out
    )
    assert "PKCS#12 password" not in fetched.out  # --new-password-file given

    assert out.stat().st_mode & 0o077 == 0
    recovered_key, recovered_cert = load_p12(out, NEW_PASSWORD)
    original_key, original_cert = load_p12(bob.p12, bob.password)
    assert recovered_cert == original_cert
    assert private_der(recovered_key) == private_der(original_key)
    with pytest.raises(ValueError):
        load_p12(out, bob.password)  # only the new password opens it

    reported = json.loads(
        ok(
            mailpki("recovery", "report", "--home", home, "--admin", "carol@example.com", "--json")
        ).out
    )
    assert [(r["request_id"], r["target_serial"], r["recovered_by"], r["approved_by"], r["reason"])
            for r in reported] == [
        (request_id, serial, "carol@example.com", ["dave@example.com", "erin@example.com"], "lost laptop")
    ]  # fmt: skip
    # The auditor's signed query gives the same answer.
    signed = ok(
        mailpki(
            "recovery", "report", "--home", home, "--json", "--p12", team.p12["frank"],
            "--password-file", team.pw["frank"],
        )
    )  # fmt: skip
    assert json.loads(signed.out) == reported
    row = requests_of(home)[request_id]
    assert row["state"] == "recovered" and row["recovered_at"]
    assert row["approved_by"] == ["dave@example.com", "erin@example.com"]

    audit = ok(mailpki("audit", "verify", "--home", home))
    assert "recovery service audit log intact" in audit.out
    service_log_intact(home)
    events = [r["event"] for r in krs_records(home)]
    assert events.count("recovery.approved") == 2 and events.count("key.recovered") == 1
    recovered_records = instance_records(home, "key.recovered")
    assert [r["data"]["request_id"] for r in recovered_records] == [request_id]

    notices = [m for m in outbox_mails(home) if "was recovered" in str(m["Subject"])]
    assert len(notices) == 1
    assert notices[0]["To"] == "bob@example.com"
    text = body_of(notices[0])
    for word in (serial, "carol@example.com", "dave@example.com", "erin@example.com"):
        assert word in text


# -- 5. attacks through the CLI -----------------------------------------------------------


def test_requester_cannot_approve_its_own_request(world: Team, tmp_path: Path) -> None:
    request_id = world.request("carol", "bob")
    before = requests_of(world.home)
    log = Refusals(world.home)
    # With its own admin certificate: that role may not approve at all.
    refused(world.approve(request_id, "carol"), "no role allowed to approve", code=4)
    log.expect_one("no role allowed to approve", actor="carol@example.com")
    # With a second, officer certificate for the same address.
    officer_p12, _, officer_pw = add_admin(world.home, tmp_path, "carol", "recovery-officer")
    log = Refusals(world.home)
    result = mailpki(
        "recovery", "approve", request_id, "--home", world.home, "--p12", officer_p12,
        "--password-file", officer_pw,
    )  # fmt: skip
    refused(result, "the requester cannot approve its own request", code=4)
    log.expect_one("cannot approve its own request", actor="carol@example.com")
    assert requests_of(world.home) == before


def test_an_officer_cannot_approve_twice(world: Team) -> None:
    request_id = world.request("carol", "bob")
    ok(world.approve(request_id, "dave"))
    log = Refusals(world.home)
    refused(world.approve(request_id, "dave"), "dave@example.com has already approved", code=4)
    log.expect_one("already approved", actor="dave@example.com")
    row = requests_of(world.home)[request_id]
    assert (row["state"], row["approved_by"]) == ("pending", ["dave@example.com"])


@pytest.mark.parametrize("who", ["frank", "casey"], ids=["auditor", "recovery-admin"])
def test_only_officers_approve(world: Team, who: str) -> None:
    request_id = world.request("carol", "bob")
    before = requests_of(world.home)
    log = Refusals(world.home)
    refused(world.approve(request_id, who), "has no role allowed to approve", code=4)
    log.expect_one("needs recovery-officer")
    assert requests_of(world.home) == before
    assert before[request_id]["approved_by"] == []


def test_an_officer_cannot_request(world: Team) -> None:
    before = requests_of(world.home)
    log = Refusals(world.home)
    result = world.run("request", "--email", "bob@example.com", admin="dave")
    refused(result, "has no role allowed to request", code=4)
    log.expect_one("needs recovery-admin")
    assert requests_of(world.home) == before


def test_no_fetch_before_the_quorum(world: Team, tmp_path: Path) -> None:
    request_id = world.request("carol", "bob")
    out = tmp_path / "early.p12"
    for approvals in (0, 1):
        log = Refusals(world.home)
        refused(
            world.fetch(request_id, "carol", out),
            f"has {approvals} of the 2 approvals it needs",
            code=4,
        )
        log.expect_one(f"has {approvals} of the 2 approvals", actor="carol@example.com")
        assert not out.exists()
        row = requests_of(world.home)[request_id]
        assert row["state"] == "pending" and len(row["approved_by"]) == approvals
        if approvals == 0:
            ok(world.approve(request_id, "dave"))


def test_only_the_requester_fetches(world: Team, tmp_path: Path) -> None:
    request_id = world.approved("carol", "bob")
    out = tmp_path / "stolen.p12"
    log = Refusals(world.home)
    refused(world.fetch(request_id, "casey", out), "only the admin who made the request", code=4)
    log.expect_one("only the admin who made the request", actor="casey@example.com")
    assert not out.exists()
    assert requests_of(world.home)[request_id]["state"] == "approved"
    # Nothing was used up: the requester still fetches it.
    ok(world.fetch(request_id, "carol", tmp_path / "carol.p12"))
    assert (tmp_path / "carol.p12").is_file()


def test_a_recovery_is_fetched_once(world: Team, tmp_path: Path) -> None:
    request_id = world.recover("carol", "bob", tmp_path / "first.p12")
    again = tmp_path / "second.p12"
    log = Refusals(world.home)
    refused(world.fetch(request_id, "carol", again), "was already fetched", code=4)
    log.expect_one("already fetched", actor="carol@example.com")
    assert not again.exists()
    assert requests_of(world.home)[request_id]["state"] == "recovered"
    recoveries = json.loads(ok(mailpki("recovery", "report", "--home", world.home, "--json")).out)
    assert [r["request_id"] for r in recoveries].count(request_id) == 1


def test_request_for_an_unknown_user(world: Team) -> None:
    before = requests_of(world.home)
    log = Refusals(world.home)
    result = world.run("request", "--email", "nobody@example.com", admin="carol")
    refused(result, "no escrowed key for nobody@example.com", code=3)
    assert requests_of(world.home) == before
    assert log.new() == []  # refused before anything was sent


def test_wrong_admin_p12_password(world: Team, tmp_path: Path) -> None:
    request_id = world.request("carol", "bob")
    before = requests_of(world.home)
    wrong = write_password(tmp_path / "wrong", "not-the-password")
    out = tmp_path / "out.p12"
    log = Refusals(world.home)
    for args in (
        ("request", "--email", "bob@example.com"),
        ("approve", request_id),
        ("fetch", request_id, "--out", out),
    ):
        line = refused(world.run(*args, admin="carol", pw=wrong), "PKCS#12", code=2)
        assert "password" in line
    assert not out.exists()
    assert log.new() == []  # refused before anything was signed or sent
    assert requests_of(world.home) == before


def test_a_revoked_admin_is_refused(world: Team, tmp_path: Path) -> None:
    world_ruth = world.extended(tmp_path)
    world_ruth.add("ruth", "recovery-admin")
    request_id = world_ruth.approved("ruth", "bob")
    ok(
        mailpki(
            "ca",
            "revoke",
            "--home",
            world.home,
            world_ruth.serial["ruth"],
            "--reason",
            "keyCompromise",
        )
    )
    before = requests_of(world.home)
    out = tmp_path / "ruth.p12"
    log = Refusals(world.home)
    refused(
        world_ruth.fetch(request_id, "ruth", out), "the signer's certificate is revoked", code=4
    )
    log.expect_one("revoked", actor="ruth@example.com")
    assert not out.exists()
    log = Refusals(world.home)
    result = world_ruth.run("request", "--email", "alice@example.com", admin="ruth")
    refused(result, "revoked", code=4)
    log.expect_one("revoked")
    assert requests_of(world.home) == before
    assert before[request_id]["state"] == "approved"


def test_an_admin_of_another_instance_is_refused(world: Team, tmp_path: Path) -> None:
    other = init_instance(tmp_path / "other")
    # Same name, same role, same address: only the issuing CA differs.
    foreign_p12, _, foreign_pw = add_admin(other, tmp_path, "carol", "recovery-admin")
    before = requests_of(world.home)
    log = Refusals(world.home)
    result = mailpki(
        "recovery", "request", "--home", world.home, "--email", "bob@example.com",
        "--p12", foreign_p12, "--password-file", foreign_pw,
    )  # fmt: skip
    refused(result, "not issued by the trusted CA", code=4)
    log.expect_one(
        "signer's certificate was not issued by the trusted CA", actor="untrusted:carol@example.com"
    )
    assert requests_of(world.home) == before


# -- 6. attacks on the service's messages -------------------------------------------------


@dataclass
class Session:
    instance: Instance
    admins: dict[str, AdminCredential]

    def send(self, message: bytes) -> dict[str, Any]:
        return self.instance.recovery_client.send(message)

    def escrowed(self, email: str) -> tuple[bytes, bytes]:
        """(certificate DER, wrapped key of its recovery block) of `email`'s newest key."""
        serial, block = self.instance.key_manager.block_for(email=email)
        return self.instance.ca.certificate_der(int(serial, 16)), block.wrapped_key

    def build(
        self,
        action: Action,
        body: dict[str, Any],
        *,
        signer: str,
        time: datetime | None = None,
        service: str | None = None,
        ocsp_for: str | None = None,
        ocsp_nonce_of: str | None = None,
    ) -> bytes:
        """A signed message made by hand; each keyword spoils one thing about it."""
        admin = self.admins[signer]
        nonce = new_nonce()
        subject = self.admins[ocsp_for or signer].certificate
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(subject, self.instance.hierarchy.issuing, hashes.SHA256())
            .add_extension(x509.OCSPNonce(ocsp_nonce(ocsp_nonce_of or nonce)), critical=False)
            .build()
        )
        stapled = self.instance.ca.responder().respond(
            request.public_bytes(serialization.Encoding.DER)
        )
        message = Message(
            action=action,
            service=service or str(self.instance.config.get("recovery.service_id")),
            nonce=nonce,
            time=time or datetime.now(UTC),
            ocsp=stapled,
            body=body,
        )
        return sign(message.to_bytes(), admin.certificate, admin.key)


@pytest.fixture
def session(world: Team) -> Iterator[Session]:
    instance = Instance.open(world.home)
    admins = {
        name: AdminCredential.from_pkcs12(
            world.p12[name].read_bytes(), world.pw[name].read_text().strip().encode()
        )
        for name in ("carol", "casey", "dave", "erin", "frank")
    }
    try:
        yield Session(instance, admins)
    finally:
        instance.close()


def flip_signature(der: bytes) -> bytes:
    """The same CMS message with one bit of its SignerInfo signature flipped."""
    info = cms.ContentInfo.load(der)
    signature = info["content"]["signer_infos"][0]["signature"].native
    at = der.rfind(signature)
    assert at > 0
    spoiled = bytearray(der)
    spoiled[at + len(signature) // 2] ^= 0x01
    return bytes(spoiled)


def request_body(certificate: bytes, wrapped_key: bytes, reason: str) -> dict[str, Any]:
    return {
        "target_certificate": base64.b64encode(certificate).decode(),
        "wrapped_key": base64.b64encode(wrapped_key).decode(),
        "reason": reason,
    }


def approve_body(request_id: str) -> dict[str, Any]:
    return {"request_id": request_id}


def unsigned(s: Session, request_id: str) -> bytes:
    message = Message(
        action="approve",
        service=str(s.instance.config.get("recovery.service_id")),
        nonce=new_nonce(),
        time=datetime.now(UTC),
        ocsp=b"",
        body=approve_body(request_id),
    )
    return message.to_bytes()


SPOILED: dict[str, tuple[Callable[[Session, str], bytes], str]] = {
    "unsigned-json": (unsigned, "the CMS message"),
    "garbage": (lambda s, r: b"\x30\x82\x01\x00" + bytes(range(256)), "the CMS message"),
    "flipped-signature": (
        lambda s, r: flip_signature(s.build("approve", approve_body(r), signer="dave")),
        "the CMS signature does not verify",
    ),
    "too-old": (
        lambda s, r: s.build(
            "approve",
            approve_body(r),
            signer="dave",
            time=datetime.now(UTC) - timedelta(minutes=10),
        ),
        "the message is too old",
    ),
    "from-the-future": (
        lambda s, r: s.build(
            "approve",
            approve_body(r),
            signer="dave",
            time=datetime.now(UTC) + timedelta(minutes=10),
        ),
        "from the future",
    ),
    "other-service": (
        lambda s, r: s.build("approve", approve_body(r), signer="dave", service="ab" * 32),
        "meant for another recovery service",
    ),
    "ocsp-of-another-certificate": (
        lambda s, r: s.build("approve", approve_body(r), signer="dave", ocsp_for="erin"),
        "the stapled OCSP response is about another certificate",
    ),
    "ocsp-of-another-message": (
        lambda s, r: s.build("approve", approve_body(r), signer="dave", ocsp_nonce_of=new_nonce()),
        "the stapled OCSP response belongs to another message",
    ),
}


def test_a_hand_built_message_is_accepted_when_nothing_is_spoiled(
    world: Team, session: Session
) -> None:
    """The control for the attacks below: their one change is what gets them refused."""
    request_id = world.request("carol", "bob")
    answer = session.send(session.build("approve", approve_body(request_id), signer="dave"))
    assert (answer["request_id"], answer["approvals"], answer["state"]) == (
        request_id,
        1,
        "pending",
    )
    assert requests_of(world.home)[request_id]["approved_by"] == ["dave@example.com"]


@pytest.mark.parametrize("attack", list(SPOILED))
def test_spoiled_messages_are_refused_and_logged(
    world: Team, session: Session, attack: str
) -> None:
    make, reason = SPOILED[attack]
    request_id = world.request("carol", "bob")
    before = requests_of(world.home)
    log = Refusals(world.home)
    with pytest.raises(RecoveryRefused, match=re.escape(reason)) as refusal:
        session.send(make(session, request_id))
    assert "\n" not in str(refusal.value)
    # Once the signature verifies, the log names the signer (here dave, trusted).
    signed_by_dave = attack not in ("unsigned-json", "garbage", "flipped-signature")
    log.expect_one(reason, actor="dave@example.com" if signed_by_dave else "unknown")
    assert requests_of(world.home) == before
    assert before[request_id]["approved_by"] == []
    service_log_intact(world.home)


def test_a_replayed_message_is_refused(world: Team, session: Session) -> None:
    carol, dave = session.admins["carol"], session.admins["dave"]
    request_id = world.request("carol", "bob")
    approval = signed_message(session.instance, dave, "approve", {"request_id": request_id})
    assert session.send(approval)["approvals"] == 1
    log = Refusals(world.home)
    with pytest.raises(RecoveryRefused, match="replayed message"):
        session.send(approval)
    log.expect_one("replayed", actor="dave@example.com")
    assert requests_of(world.home)[request_id]["approved_by"] == ["dave@example.com"]

    # A replayed request does not make a second request either.
    certificate, wrapped = session.escrowed("bob@example.com")
    request = signed_message(
        session.instance,
        carol,
        "request",
        request_body(certificate, wrapped, "replay test"),
    )
    made = session.send(request)["request_id"]
    before = requests_of(world.home)
    assert made in before
    log = Refusals(world.home)
    with pytest.raises(RecoveryRefused, match="replayed message"):
        session.send(request)
    log.expect_one("replayed", actor="carol@example.com")
    assert requests_of(world.home) == before
    service_log_intact(world.home)


def test_a_tampered_recovery_block_does_not_open(world: Team, tmp_path: Path) -> None:
    serial = enroll(world.home, tmp_path, "tina").serial
    instance = Instance.open(world.home)
    try:
        with instance.db.transaction() as db:
            row = db.scalar(select(EscrowedKey).where(EscrowedKey.serial == serial))
            assert row is not None
            spoiled = bytearray(row.ciphertext)
            spoiled[len(spoiled) // 2] ^= 0x01
            row.ciphertext = bytes(spoiled)
    finally:
        instance.close()
    request_id = world.approved("carol", "tina")
    out = tmp_path / "tina-recovered.p12"
    refused(world.fetch(request_id, "carol", out), "does not decrypt: it was tampered with")
    assert not out.exists()
    # The instance records no recovery of it (no key came out), but the failure itself.
    assert request_id not in {
        r["data"]["request_id"] for r in instance_records(world.home, "key.recovered")
    }
    failed = [
        r for r in instance_records(world.home, "recovery.failed")
        if r["data"]["request_id"] == request_id
    ]  # fmt: skip
    assert len(failed) == 1 and "tampered" in failed[0]["data"]["reason"]
    assert failed[0]["data"]["recovered_by"] == "carol@example.com"
    ok(mailpki("audit", "verify", "--home", world.home))


def test_a_swapped_recovery_block_is_refused(world: Team, session: Session, tmp_path: Path) -> None:
    """A request naming bob's certificate but carrying alice's wrapped key: after the
    quorum the service sees the block is bound to another key and releases nothing."""
    bob, _ = session.escrowed("bob@example.com")
    _, alice_wrapped = session.escrowed("alice@example.com")
    message = signed_message(
        session.instance,
        session.admins["carol"],
        "request",
        request_body(bob, alice_wrapped, "swapped"),
    )
    answer = session.send(message)
    request_id = answer["request_id"]
    bob_serial = cert_serial(x509.load_der_x509_certificate(bob))
    assert (answer["target_email"], answer["target_serial"]) == ("bob@example.com", bob_serial)
    ok(world.approve(request_id, "dave"))
    ok(world.approve(request_id, "erin"))
    out = tmp_path / "swapped.p12"
    log = Refusals(world.home)
    refused(
        world.fetch(request_id, "carol", out),
        "does not belong to the requested certificate",
        code=4,
    )
    log.expect_one("does not belong", actor="carol@example.com")
    assert not out.exists()
    assert requests_of(world.home)[request_id]["state"] == "approved"
    service_log_intact(world.home)


# -- 7. anomaly alerts --------------------------------------------------------------------


def alerting_team(home: Path, folder: Path, smtp: SMTPServer, hold: bool) -> Team:
    settings = {
        "alerts.contacts": "sec@example.com,carol@example.com",
        "alerts.per_admin_hour": "1",
        "alerts.hold": "true" if hold else "false",
        "smtp.host": smtp.host,
        "smtp.port": str(smtp.port),
    }
    for key, value in settings.items():
        ok(mailpki("recovery-service", "config", "set", "--home", home / "krs", key, value))
    shown = ok(mailpki("recovery-service", "config", "show", "--home", home / "krs")).out
    assert "alerts.contacts = 'sec@example.com,carol@example.com'" in shown
    team = team_for(home, folder, CORE_TEAM)
    enroll(home, folder, "bob")
    return team


def alerts_of(home: Path) -> list[dict[str, Any]]:
    return json.loads(
        ok(mailpki("recovery-service", "alerts", "--home", home / "krs", "--json")).out
    )


def test_anomaly_alert_holds_recoveries_until_confirmed(
    sqlite_home: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    home = sqlite_home
    team = alerting_team(home, tmp_path, smtp_server, hold=True)
    team.recover("carol", "bob", tmp_path / "1.p12")
    assert smtp_server.messages == []

    second = team.approved("carol", "bob")
    line = refused(
        team.fetch(second, "carol", tmp_path / "2.p12"),
        "it is held until sec@example.com confirms it",
        code=4,
    )
    assert not (tmp_path / "2.p12").exists()
    assert len(smtp_server.messages) == 1
    mail = smtp_server.messages[0]
    assert mail.rcpt_tos == ["sec@example.com"] and mail["To"] == "sec@example.com"
    match = re.search(r"confirm --home \S+ (\d+) --token (\S+)", mail.text)
    assert match, mail.text
    alert_id, token = int(match.group(1)), match.group(2)
    assert f"raised alert {alert_id} " in line
    assert f"alert {alert_id}" in str(mail["Subject"])
    for word in ("per-admin-hour", "carol@example.com", second, "HELD"):
        assert word in mail.text

    [alert] = alerts_of(home)
    assert (alert["id"], alert["rule"], alert["contact"], alert["request_id"]) == (
        alert_id, "per-admin-hour", "sec@example.com", second,
    )  # fmt: skip
    assert alert["holds"] is True and alert["confirmed_at"] is None
    assert requests_of(home)[second]["state"] == "approved"

    third = team.approved("carol", "bob")
    refused(
        team.fetch(third, "carol", tmp_path / "3.p12"),
        f"recoveries are held until sec@example.com confirms alert {alert_id}",
        code=4,
    )
    assert not (tmp_path / "3.p12").exists()
    assert len(smtp_server.messages) == 1  # the standing hold raises no second alert

    wrong = mailpki(
        "recovery-service", "confirm", str(alert_id), "--token", token[::-1], "--home", home / "krs"
    )
    refused(wrong, f"wrong confirmation token for alert {alert_id}", code=4)
    audited = krs_records(home, "alert.confirmation_refused")
    assert [r["data"]["alert_id"] for r in audited] == [alert_id]
    assert alerts_of(home)[0]["confirmed_at"] is None

    ok(
        mailpki(
            "recovery-service", "confirm", str(alert_id), "--token", token, "--home", home / "krs"
        )
    )
    [alert] = alerts_of(home)
    assert alert["confirmed_at"] is not None
    assert [r["data"]["alert_id"] for r in krs_records(home, "alert.confirmed")] == [alert_id]

    for request_id, name in ((second, "2.p12"), (third, "3.p12")):
        ok(team.fetch(request_id, "carol", tmp_path / name))
        assert (tmp_path / name).is_file()
    assert {requests_of(home)[r]["state"] for r in (second, third)} == {"recovered"}
    assert all("carol@example.com" not in m.rcpt_tos for m in smtp_server.messages)
    refusals = krs_records(home, "recovery.refused")
    assert len(refusals) == 2 and all("held" in r["data"]["reason"] for r in refusals)
    service_log_intact(home)


def test_anomaly_alert_without_hold_lets_the_recovery_through(
    sqlite_home: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    home = sqlite_home
    team = alerting_team(home, tmp_path, smtp_server, hold=False)
    team.recover("carol", "bob", tmp_path / "1.p12")
    assert smtp_server.messages == []
    second = team.recover("carol", "bob", tmp_path / "2.p12")
    assert (tmp_path / "2.p12").is_file()
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["sec@example.com"]
    assert "Recoveries are not held" in mail.text and second in mail.text
    [alert] = alerts_of(home)
    assert alert["holds"] is False and alert["request_id"] == second
    assert krs_records(home, "recovery.refused") == []


# -- 8. revoke and reissue ----------------------------------------------------------------


def test_reissue_revokes_and_replaces_every_key_an_admin_recovered(
    world: Team, tmp_path: Path
) -> None:
    team = world.extended(tmp_path)
    team.add("rita", "recovery-admin")
    old: dict[str, str] = {}
    for user in ("uma", "vic"):
        old[user] = enroll(world.home, tmp_path, user).serial
        team.recover("rita", user, tmp_path / f"{user}-recovered.p12")
    untouched = certs_list(world.home)
    out = tmp_path / "reissued"
    result = ok(
        mailpki(
            "recovery", "reissue", "--home", world.home, "--recovered-by", "rita@example.com",
            "--out", out,
        )
    )  # fmt: skip
    new: dict[str, str] = {}
    for user, serial in old.items():
        match = re.search(
            rf"{user}@example\.com: 0*{serial} revoked, new certificate ([0-9A-F]+) in (\S+) "
            r"\(password, shown once: (\S+)\)",
            result.out,
        )
        assert match, result.out
        new[user] = stored_serial(match.group(1))
        path, password = Path(match.group(2)), match.group(3)
        assert path.parent == out
        key, cert = load_p12(path, password)
        assert cert_serial(cert) == new[user] and cert_emails(cert) == [f"{user}@example.com"]
        assert key.public_key() == cert.public_key()
    assert len(list(out.glob("*.p12"))) == 2

    listed, escrowed = certs_list(world.home), keys_list(world.home)
    for user in old:
        assert (listed[old[user]]["status"], listed[old[user]]["reason"]) == (
            "revoked",
            "keyCompromise",
        )
        assert listed[new[user]]["status"] == "valid"
        assert listed[new[user]]["email"] == f"{user}@example.com"
        assert (escrowed[new[user]]["state"], escrowed[new[user]]["email"]) == (
            "delivered", f"{user}@example.com",
        )  # fmt: skip
    # Nothing rita did not recover was touched.
    changed = {s for s, row in untouched.items() if listed[s]["status"] != row["status"]}
    assert changed == set(old.values())
