"""An instance whose CA, OCSP and audit keys live in a real SoftHSM2 token."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509

from tests.fixtures.softhsm import SoftHSMToken
from tests.integration.cli_helpers import mailpki, make_csr, openssl


def test_init_issue_revoke_crl_with_token_keys(softhsm_token: SoftHSMToken, tmp_path: Path) -> None:
    home = tmp_path / "hsm"
    result = mailpki(
        "init",
        "--home",
        home,
        "--org",
        "HSM Corp",
        "--domain",
        "hsm-corp.com",
        "--org-id",
        "NTRGB-87654321",
        "--ca-key-type",
        "rsa3072",
        "--pkcs11-module",
        softhsm_token.module,
        "--pkcs11-token",
        softhsm_token.label,
        "--pkcs11-pin-file",
        softhsm_token.pin_file,
        # The embedded recovery service's transport key lives in the token too, and
        # SoftHSM2 2.6 unwraps RSA-OAEP only with SHA-1.
        "--recovery-oaep-hash",
        "sha1",
    )
    assert result.code == 0, result.err
    assert "PKCS#11" in result.out
    # No key material on disk, and no PIN in the config.
    # The CA keys live in the token; the only key file is the ML-DSA-65 audit key, which
    # SoftHSM2 cannot hold (encrypted PKCS#8, as docs/audit.md says).
    files = sorted(p.name for p in (home / "keys").iterdir()) if (home / "keys").exists() else []
    assert files in ([], ["audit-mldsa.pem"]), files
    assert softhsm_token.pin not in (home / "config.toml").read_text()

    csr = make_csr(tmp_path, "erin")
    out = tmp_path / "erin.pem"
    result = mailpki(
        "ca",
        "issue",
        "--home",
        home,
        "--csr",
        csr,
        "--email",
        "erin@hsm-corp.com",
        "--name",
        "Erin Smith",
        "--out",
        out,
    )
    assert result.code == 0, result.err
    ca = home / "ca"
    openssl(
        "verify",
        "-purpose",
        "smimesign",
        "-CAfile",
        ca / "root.pem",
        "-untrusted",
        ca / "issuing.pem",
        out,
    )
    text = openssl("x509", "-in", out, "-noout", "-text").stdout
    assert "sha256WithRSAEncryption" in text
    assert "organizationIdentifier = NTRGB-87654321" in text

    serial = format(x509.load_pem_x509_certificate(out.read_bytes()).serial_number, "X")
    assert mailpki("ca", "revoke", "--home", home, serial, "--reason", "keyCompromise").code == 0
    cdp = tmp_path / "cdp"
    assert mailpki("ca", "crl", "--home", home, "--out", cdp).code == 0
    openssl(
        "crl",
        "-inform",
        "DER",
        "-in",
        cdp / "issuing-0.crl",
        "-CAfile",
        ca / "issuing.pem",
        "-noout",
    )
    openssl("crl", "-inform", "DER", "-in", cdp / "root.crl", "-CAfile", ca / "root.pem", "-noout")
    crl = x509.load_der_x509_crl((cdp / "issuing.crl").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None

    verify = json.loads(mailpki("audit", "verify", "--home", home, "--json").out)
    assert verify["ok"] and verify["checkpoints"] >= 1

    # Token keys cannot leave the token: exporting the root says so and writes nothing.
    pw = tmp_path / "pw"
    pw.write_text("export passphrase")
    result = mailpki(
        "ca",
        "root",
        "export",
        "--home",
        home,
        "--out",
        tmp_path / "root.key",
        "--passphrase-file",
        pw,
    )
    assert result.code != 0 and "not extractable" in result.err
    assert not (tmp_path / "root.key").exists()
