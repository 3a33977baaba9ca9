"""CRLs assembled from stored entry DER are valid CRLs to outside tools: the real
`openssl crl` verifies their signature and `openssl verify` uses them, and pkilint's
CRL linter (`lint_crl`) finds nothing, for the full CRL and a partition (with its
IssuingDistributionPoint), with every reason code. Migration 0013's backfill of
entries for older rows is tested in test_migrations.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from cryptography import x509

from tests.fixtures.ci_policy import in_ci
from tests.integration.cli_helpers import mailpki, openssl
from tests.integration.test_cli_ca import issue

REASONS = [
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
]


def lint_crl_cli() -> str:
    beside = Path(sys.executable).with_name("lint_crl")
    found = str(beside) if beside.exists() else shutil.which("lint_crl")
    if found is None:
        if in_ci():
            pytest.fail("lint_crl (pkilint) is not installed")
        pytest.skip("lint_crl (pkilint) is not installed")
    return found


def _lint(crl: Path) -> None:
    import subprocess

    proc = subprocess.run(
        [lint_crl_cli(), "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", str(crl)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"lint_crl found problems in {crl.name}:\n{proc.stdout}{proc.stderr}"
    )


def test_assembled_crls_pass_openssl_and_pkilint(home: Path, tmp_path: Path) -> None:
    ca = home / "ca"
    revoked: dict[int, str] = {}
    for i, reason in enumerate(REASONS):
        _, serial = issue(home, tmp_path, f"user{i}")
        result = mailpki("ca", "revoke", "--home", home, serial, "--reason", reason)
        assert result.code == 0, result.err
        revoked[int(serial, 16)] = reason
    good_pem, _ = issue(home, tmp_path, "stays")
    legacy_pem, legacy = issue(home, tmp_path, "legacy")
    assert mailpki("ca", "revoke", "--home", home, legacy, "--reason", "superseded").code == 0
    revoked[int(legacy, 16)] = "superseded"
    cdp = tmp_path / "cdp"
    result = mailpki("ca", "crl", "--home", home, "--out", cdp)
    assert result.code == 0, result.err
    for name in ("issuing.crl", "issuing-0.crl"):
        path = cdp / name
        # The real openssl checks the signature over the assembled TBS ("verify OK").
        checked = openssl(
            "crl", "-inform", "DER", "-in", path, "-CAfile", ca / "issuing.pem", "-noout"
        )
        assert "verify OK" in checked.stdout + checked.stderr
        crl = x509.load_der_x509_crl(path.read_bytes())
        assert len(crl) == len(revoked)
        for serial, reason in revoked.items():
            entry = crl.get_revoked_certificate_by_serial_number(serial)
            assert entry is not None
            flags = [
                e.value.reason for e in entry.extensions if isinstance(e.value, x509.CRLReason)
            ]
            # "unspecified" is said by leaving the reason code out (RFC 5280 §5.3.1).
            assert [f.value for f in flags] == ([] if reason == "unspecified" else [reason])
        _lint(path)
        pem = tmp_path / f"{name}.pem"
        openssl("crl", "-inform", "DER", "-in", path, "-out", pem)
        root_crl = tmp_path / "root-crl.pem"
        openssl("crl", "-inform", "DER", "-in", cdp / "root.crl", "-out", root_crl)
        chain = ["-CAfile", ca / "root.pem", "-untrusted", ca / "issuing.pem"]
        crls = ["-crl_check_all", "-CRLfile", pem, "-CRLfile", root_crl]
        if name == "issuing.crl":
            continue  # the certificates name the partition as their CDP, not the full CRL
        ok = openssl("verify", *chain, *crls, good_pem)
        assert ok.returncode == 0
        bad = openssl("verify", *chain, *crls, legacy_pem, check=False)
        assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr
    _lint(cdp / "root.crl")
