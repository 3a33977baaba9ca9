"""The foundation's commands end to end, checked with the real openssl, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509

from mailpki.ca.serials import show_serial
from tests.integration.cli_helpers import mailpki, mailpki_process, make_csr, openssl


def issue(
    home: Path, tmp_path: Path, name: str = "alice", *extra: str, key: str = "ec"
) -> tuple[Path, str]:
    csr = make_csr(tmp_path, name, key=key)
    out = tmp_path / f"{name}.pem"
    result = mailpki(
        "ca",
        "issue",
        "--home",
        home,
        "--csr",
        csr,
        "--email",
        f"{name}@example.com",
        "--name",
        f"{name.title()} Smith",
        "--out",
        out,
        *extra,
    )
    assert result.code == 0, result.err
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    return out, format(cert.serial_number, "X")


def certs(home: Path) -> list[dict[str, str]]:
    result = mailpki("certs", "list", "--home", home, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def audit_ok(home: Path) -> bool:
    return mailpki("audit", "verify", "--home", home).code == 0


def test_init_builds_a_verifiable_hierarchy(home: Path) -> None:
    ca = home / "ca"
    openssl("verify", "-CAfile", ca / "root.pem", ca / "issuing.pem")
    chain = mailpki("ca", "chain", "--home", home)
    assert chain.code == 0
    blocks = x509.load_pem_x509_certificates(chain.out.encode())
    issuing = x509.load_pem_x509_certificate((ca / "issuing.pem").read_bytes())
    root = x509.load_pem_x509_certificate((ca / "root.pem").read_bytes())
    assert blocks == [issuing, root]
    # Keys at rest are encrypted; the config names no secret.
    for key in (home / "keys").iterdir():
        assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert key.stat().st_mode & 0o077 == 0
    config = (home / "config.toml").read_text()
    passphrase = (home / "secrets" / "ca-passphrase").read_text().strip()
    assert passphrase not in config
    assert audit_ok(home)


def test_init_twice_is_refused_and_changes_nothing(home: Path) -> None:
    before = (home / "config.toml").read_bytes()
    again = mailpki("init", "--home", home, "--org", "Other", "--domain", "other.org")
    assert again.code != 0
    assert "already holds a mailpki instance" in again.err
    assert (home / "config.toml").read_bytes() == before


def test_issue_verify_revoke_and_crls(home: Path, tmp_path: Path) -> None:
    pem, serial = issue(home, tmp_path)
    ca = home / "ca"
    # The real openssl accepts it for S/MIME signing.
    openssl(
        "verify",
        "-purpose",
        "smimesign",
        "-CAfile",
        ca / "root.pem",
        "-untrusted",
        ca / "issuing.pem",
        pem,
    )
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    # Nothing of the CSR's subject got in: the profile names the person.
    assert "Evil Corp" not in cert.subject.rfc4514_string()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]
    listed = {row["serial"]: row for row in certs(home)}
    assert listed[serial]["status"] == "valid"
    assert listed[serial]["profile"] == "sponsored-multipurpose"

    # Revoke with the serial written the way people paste it.
    pasted = ":".join(serial.lower()[i : i + 2] for i in range(0, len(serial), 2))
    result = mailpki("ca", "revoke", "--home", home, pasted, "--reason", "keyCompromise")
    assert result.code == 0, result.err
    assert {row["serial"]: row for row in certs(home)}[serial]["status"] == "revoked"

    cdp = tmp_path / "cdp"
    result = mailpki("ca", "crl", "--home", home, "--out", cdp)
    assert result.code == 0, result.err
    names = sorted(p.name for p in cdp.iterdir())
    assert names == ["issuing-0.crl", "issuing.crl", "root.crl"]
    for name in ("issuing.crl", "issuing-0.crl"):
        text = openssl(
            "crl",
            "-inform",
            "DER",
            "-in",
            cdp / name,
            "-CAfile",
            ca / "issuing.pem",
            "-noout",
            "-text",
        ).stdout
        assert "Key Compromise" in text
        entry = x509.load_der_x509_crl(
            (cdp / name).read_bytes()
        ).get_revoked_certificate_by_serial_number(int(serial, 16))
        assert entry is not None
    openssl("crl", "-inform", "DER", "-in", cdp / "root.crl", "-CAfile", ca / "root.pem", "-noout")
    # openssl verify with CRL checking says revoked; the partition's IDP matches the CDP.
    openssl("crl", "-inform", "DER", "-in", cdp / "issuing-0.crl", "-out", tmp_path / "p0.pem")
    openssl("crl", "-inform", "DER", "-in", cdp / "root.crl", "-out", tmp_path / "root-crl.pem")
    checked = openssl(
        "verify",
        "-crl_check_all",
        "-CAfile",
        ca / "root.pem",
        "-untrusted",
        ca / "issuing.pem",
        "-CRLfile",
        tmp_path / "p0.pem",
        "-CRLfile",
        tmp_path / "root-crl.pem",
        pem,
        check=False,
    )
    assert checked.returncode != 0
    assert "certificate revoked" in checked.stdout + checked.stderr
    good, _ = issue(home, tmp_path, "bob")
    ok = openssl(
        "verify",
        "-crl_check_all",
        "-purpose",
        "smimesign",
        "-CAfile",
        ca / "root.pem",
        "-untrusted",
        ca / "issuing.pem",
        "-CRLfile",
        tmp_path / "p0.pem",
        "-CRLfile",
        tmp_path / "root-crl.pem",
        good,
    )
    assert ": OK" in ok.stdout
    assert audit_ok(home)


@pytest.mark.parametrize(
    "profile",
    [
        "sponsored-multipurpose",
        "sponsored-strict-signing",
        "sponsored-strict-encryption",
        "mailbox-strict",
        "enterprise-private",
    ],
)
def test_every_shipped_profile_issues(sqlite_home: Path, tmp_path: Path, profile: str) -> None:
    # RSA, because openssl's smimeencrypt purpose wants keyEncipherment (EC has keyAgreement).
    pem, serial = issue(
        sqlite_home, tmp_path, "carol", "--profile", profile, "--site", "Paris", key="rsa"
    )
    row = {r["serial"]: r for r in certs(sqlite_home)}[serial]
    assert row["profile"] == profile
    ca = sqlite_home / "ca"
    can_sign = "encryption" not in profile
    can_encrypt = "signing" not in profile
    for purpose, allowed in (("smimesign", can_sign), ("smimeencrypt", can_encrypt)):
        result = openssl(
            "verify",
            "-purpose",
            purpose,
            "-CAfile",
            ca / "root.pem",
            "-untrusted",
            ca / "issuing.pem",
            pem,
            check=False,
        )
        assert (result.returncode == 0) == allowed, (purpose, result.stdout, result.stderr)


def test_rsa_csr_and_rsa_ca(tmp_path: Path) -> None:
    home = tmp_path / "rsa"
    assert mailpki("init", "--home", home, "--org", "RSA Org", "--domain", "rsa-org.com").code == 0
    csr = make_csr(tmp_path, "dave", key="rsa")
    out = tmp_path / "dave.pem"
    result = mailpki(
        "ca",
        "issue",
        "--home",
        home,
        "--csr",
        csr,
        "--email",
        "dave@rsa-org.com",
        "--name",
        "Dave Jones",
        "--out",
        out,
    )
    assert result.code == 0, result.err
    text = openssl("x509", "-in", out, "-noout", "-text").stdout
    assert "Digital Signature, Key Encipherment" in text
    assert "sha256WithRSAEncryption" in text
    openssl(
        "verify",
        "-purpose",
        "smimesign",
        "-CAfile",
        home / "ca" / "root.pem",
        "-untrusted",
        home / "ca" / "issuing.pem",
        out,
    )


def test_config_set_get_show(home: Path) -> None:
    assert (
        mailpki("config", "set", "--home", home, "web.base_url", "https://pki.example.com/").code
        == 0
    )
    got = mailpki("config", "get", "--home", home, "web.base_url")
    assert got.out.strip() == "https://pki.example.com"
    shown = json.loads(mailpki("config", "show", "--home", home, "--json").out)
    assert shown["web.base_url"] == "https://pki.example.com"
    bad = mailpki("config", "set", "--home", home, "web.base_url", "ftp://x")
    assert bad.code != 0 and "web.base_url" in bad.err
    unknown = mailpki("config", "set", "--home", home, "no.such", "1")
    assert unknown.code != 0 and "unknown setting" in unknown.err
    assert (
        mailpki("config", "get", "--home", home, "web.base_url").out.strip()
        == "https://pki.example.com"
    )
    assert audit_ok(home)


def test_new_base_url_goes_into_new_certificates(sqlite_home: Path, tmp_path: Path) -> None:
    assert (
        mailpki(
            "config", "set", "--home", sqlite_home, "web.base_url", "https://pki.example.com"
        ).code
        == 0
    )
    pem, _ = issue(sqlite_home, tmp_path)
    text = openssl("x509", "-in", pem, "-noout", "-text").stdout
    # CDP and AIA are plain http on the portal's host (S/MIME BR 7.1.2.3).
    assert "URI:http://pki.example.com/crl/issuing-0.crl" in text
    assert "OCSP - URI:http://pki.example.com/ocsp" in text
    assert "CA Issuers - URI:http://pki.example.com/ca/issuing.crt" in text


def test_offline_root(sqlite_home: Path, tmp_path: Path) -> None:
    home = sqlite_home
    pw = tmp_path / "export.pass"
    pw.write_text("correct horse battery staple\n")
    exported = tmp_path / "root-key.pem"
    assert (
        mailpki(
            "ca", "root", "export", "--home", home, "--out", exported, "--passphrase-file", pw
        ).code
        == 0
    )
    openssl("pkey", "-in", exported, "-passin", f"file:{pw}", "-noout")
    assert mailpki("ca", "root", "remove", "--home", home).code != 0  # needs --yes
    assert mailpki("ca", "root", "remove", "--home", home, "--yes").code == 0
    assert not (home / "keys" / "root.pem").exists()
    renew = mailpki("ca", "issuing", "renew", "--home", home)
    assert renew.code != 0 and "needs the root key" in renew.err
    # CRLs still work; the root CRL is the stored one, with a warning.
    result = mailpki("ca", "crl", "--home", home, "--out", tmp_path / "cdp")
    assert result.code == 0, result.err
    assert "root key is offline" in result.err
    assert (tmp_path / "cdp" / "root.crl").exists()
    # Issuing still works without the root.
    issue(home, tmp_path)
    # A wrong key is refused; the right one comes back.
    other = tmp_path / "other"
    assert (
        mailpki(
            "init",
            "--home",
            other,
            "--org",
            "O",
            "--domain",
            "other-org.com",
            "--ca-key-type",
            "p256",
        ).code
        == 0
    )
    wrong = tmp_path / "wrong.pem"
    assert (
        mailpki(
            "ca", "root", "export", "--home", other, "--out", wrong, "--passphrase-file", pw
        ).code
        == 0
    )
    refused = mailpki(
        "ca", "root", "import", "--home", home, "--key", wrong, "--passphrase-file", pw
    )
    assert refused.code != 0 and "not the key of this instance's root" in refused.err
    assert (
        mailpki(
            "ca", "root", "import", "--home", home, "--key", exported, "--passphrase-file", pw
        ).code
        == 0
    )
    result = mailpki("ca", "crl", "--home", home, "--out", tmp_path / "cdp2")
    assert result.code == 0 and "offline" not in result.err
    # With the root back, the issuing CA can be re-signed; old certificates still chain.
    old_issuing = (home / "ca" / "issuing.pem").read_bytes()
    renew = mailpki("ca", "issuing", "renew", "--home", home, "--years", "5")
    assert renew.code == 0, renew.err
    assert (home / "ca" / "issuing.pem").read_bytes() != old_issuing
    # The old certificate is kept beside it, named by its serial as the CLI prints it.
    old_serial = x509.load_pem_x509_certificate(old_issuing).serial_number
    assert (home / "ca" / f"issuing-{show_serial(old_serial)}.pem").read_bytes() == old_issuing
    pem, _ = issue(home, tmp_path, "zed")
    for cert in (pem, tmp_path / "alice.pem"):
        openssl(
            "verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            home / "ca" / "root.pem",
            "-untrusted",
            home / "ca" / "issuing.pem",
            cert,
        )
    assert audit_ok(home)


def test_entry_point_and_default_home(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "MAILPKI_HOME": str(tmp_path / "envhome")}
    result = mailpki_process(
        "init", "--org", "Env Org", "--domain", "env-org.com", "--ca-key-type", "p256", env=env
    )
    assert result.code == 0, result.err
    assert (tmp_path / "envhome" / "config.toml").exists()
    listed = mailpki_process("certs", "list", "--json", env=env)
    assert listed.code == 0 and json.loads(listed.out) == []
    missing = mailpki_process("certs", "list", "--home", tmp_path / "nowhere")
    assert missing.code != 0
    assert len(missing.err.strip().splitlines()) == 1
    assert "run 'mailpki init' first" in missing.err


def test_audit_verify_finds_tampering(sqlite_home: Path, tmp_path: Path) -> None:
    issue(sqlite_home, tmp_path)
    assert audit_ok(sqlite_home)
    db = sqlite3.connect(sqlite_home / "mailpki.db")
    db.execute("UPDATE audit_records SET actor='someone-else' WHERE event='cert.issued'")
    db.commit()
    db.close()
    result = mailpki("audit", "verify", "--home", sqlite_home)
    assert result.code != 0
    assert "modified" in result.err


def test_profiles_listed_with_the_default(sqlite_home: Path) -> None:
    result = mailpki("ca", "profiles", "--home", sqlite_home, "--json")
    assert result.code == 0, result.err
    listed = {p["name"]: p for p in json.loads(result.out)}
    assert set(listed) >= {
        "sponsored-multipurpose",
        "sponsored-strict-signing",
        "sponsored-strict-encryption",
        "mailbox-strict",
        "enterprise-private",
    }
    assert listed["sponsored-multipurpose"]["default"] is True
    assert listed["enterprise-private"]["lint_type"] is None
    assert "RFC 5280" in listed["enterprise-private"]["description"]


def test_instance_without_org_id_issues_mailbox_certificates(tmp_path: Path) -> None:
    home = tmp_path / "plain"
    result = mailpki(
        "init",
        "--home",
        home,
        "--org",
        "Example Corp",
        "--domain",
        "example.com",
        "--ca-key-type",
        "p256",
    )
    assert result.code == 0, result.err
    assert "mailbox-strict" in result.out
    pem, _ = issue(home, tmp_path)
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=alice@example.com"
    refused = mailpki(
        "ca",
        "issue",
        "--home",
        home,
        "--csr",
        make_csr(tmp_path, "b"),
        "--email",
        "b@example.com",
        "--name",
        "B Person",
        "--profile",
        "sponsored-multipurpose",
        "--out",
        tmp_path / "b.pem",
    )
    assert refused.code != 0 and "config set instance.org_id" in refused.err
