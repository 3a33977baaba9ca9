"""`mailpki ca trust-kit --out DIR`: the root in every form, checked with openssl and
plistlib, the instructions beside it, and refusals that change nothing."""

from __future__ import annotations

import plistlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.integration.cli_helpers import mailpki, openssl

FILES = {"root.pem", "root.cer", "root.p7c", "root.mobileconfig", "fingerprints.txt", "README.html"}


def test_trust_kit_holds_the_root_in_every_form(sqlite_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "kit"
    result = mailpki("ca", "trust-kit", "--home", sqlite_home, "--out", out)
    assert result.code == 0, result.err
    assert {p.name for p in out.iterdir()} == FILES
    root = x509.load_pem_x509_certificate((sqlite_home / "ca" / "root.pem").read_bytes())
    sha256 = root.fingerprint(hashes.SHA256()).hex(":").upper()
    assert sha256 in result.out

    pem = openssl("x509", "-in", out / "root.pem", "-noout", "-fingerprint", "-sha256").stdout
    der = openssl(
        "x509", "-inform", "DER", "-in", out / "root.cer", "-noout", "-fingerprint", "-sha256"
    ).stdout
    assert pem.strip().endswith(sha256) and der.strip().endswith(sha256)
    printed = openssl("pkcs7", "-inform", "DER", "-in", out / "root.p7c", "-print_certs").stdout
    assert x509.load_pem_x509_certificates(printed.encode()) == [root]
    # openssl verifies the root as a trust anchor for S/MIME with itself.
    openssl("verify", "-CAfile", out / "root.pem", "-purpose", "any", out / "root.pem")

    profile = plistlib.loads((out / "root.mobileconfig").read_bytes())
    assert (profile["PayloadType"], profile["PayloadVersion"]) == ("Configuration", 1)
    assert profile["PayloadIdentifier"] == "com.example.mailpki.trust"
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    inner = tmp_path / "inner.cer"
    inner.write_bytes(payload["PayloadContent"])
    inside = openssl("x509", "-inform", "DER", "-in", inner, "-noout", "-fingerprint", "-sha256")
    assert inside.stdout.strip().endswith(sha256)
    for key in ("PayloadUUID", "PayloadIdentifier", "PayloadDisplayName"):
        assert payload[key] and profile[key]

    fingerprints = (out / "fingerprints.txt").read_text()
    assert f"SHA-256: {sha256}" in fingerprints
    readme = (out / "README.html").read_text()
    assert sha256 in readme and 'href="root.mobileconfig"' in readme and "<script" not in readme
    for platform in ("Outlook (Windows)", "Outlook (macOS)", "Apple Mail", "Thunderbird",
                     "iPhone and iPad", "Android"):  # fmt: skip
        assert platform in readme

    # The same kit again is the same bytes (stable profile UUIDs: reinstalling replaces).
    again = tmp_path / "again"
    assert mailpki("ca", "trust-kit", "--home", sqlite_home, "--out", again).code == 0
    assert (again / "root.mobileconfig").read_bytes() == (out / "root.mobileconfig").read_bytes()


def test_trust_kit_refuses_to_overwrite_and_changes_nothing(
    sqlite_home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "kit"
    out.mkdir()
    (out / "root.pem").write_text("mine")
    result = mailpki("ca", "trust-kit", "--home", sqlite_home, "--out", out)
    assert result.code != 0 and "--force" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["root.pem"]
    assert (out / "root.pem").read_text() == "mine"
    forced = mailpki("ca", "trust-kit", "--home", sqlite_home, "--out", out, "--force")
    assert forced.code == 0 and "BEGIN CERTIFICATE" in (out / "root.pem").read_text()

    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = mailpki("ca", "trust-kit", "--home", sqlite_home, "--out", a_file)
    assert result.code != 0 and "not a folder" in result.err
    missing = mailpki("ca", "trust-kit", "--home", tmp_path / "nohome", "--out", tmp_path / "k2")
    assert missing.code != 0 and not (tmp_path / "k2").exists()
