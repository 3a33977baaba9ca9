"""pkilint's own command line, run as an outside checker on what the CLI issued."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.ci_policy import in_ci
from tests.integration.cli_helpers import mailpki, make_csr


def pkilint_cli() -> str:
    beside = Path(sys.executable).with_name("lint_cabf_smime_cert")
    found = str(beside) if beside.exists() else shutil.which("lint_cabf_smime_cert")
    if found is None:
        if in_ci():
            pytest.fail("lint_cabf_smime_cert (pkilint) is not installed")
        pytest.skip("lint_cabf_smime_cert (pkilint) is not installed")
    return found


@pytest.mark.parametrize(
    "profile",
    [
        "sponsored-multipurpose",
        "sponsored-strict-signing",
        "sponsored-strict-encryption",
        "mailbox-strict",
    ],
)
@pytest.mark.parametrize("key", ["ec", "rsa"])
def test_issued_certificates_pass_pkilint_detected_from_policy_oid(
    sqlite_home: Path, tmp_path: Path, profile: str, key: str
) -> None:
    out = tmp_path / "cert.pem"
    result = mailpki(
        "ca",
        "issue",
        "--home",
        sqlite_home,
        "--csr",
        make_csr(tmp_path, "lint", key=key),
        "--email",
        "lint.me@example.com",
        "--name",
        "Lint Person",
        "--profile",
        profile,
        "--out",
        out,
    )
    assert result.code == 0, result.err
    # -d: pkilint picks the BR type from the certificate's policy OID, not from us.
    checked = subprocess.run(
        [pkilint_cli(), "lint", "-d", "-s", "WARNING", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
