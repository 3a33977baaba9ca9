"""The shipped systemd units pass `systemd-analyze verify` and keep their hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.ci_policy import in_ci

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED = "/opt/mailpki/bin/mailpki"
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
    "UMask=0077",
)


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if in_ci():
            pytest.fail("systemd-analyze is missing (CI=true: the test command installs systemd)")
        pytest.skip("systemd-analyze is not installed")
    return found


@pytest.mark.parametrize("unit", ["mailpki.service", "mailpki-recovery.service"])
def test_unit_verifies_cleanly_and_is_hardened(unit: str, tmp_path: Path) -> None:
    text = (UNITS / unit).read_text()
    for line in HARDENING:
        assert f"\n{line}\n" in text, f"{unit} lost {line}"
    assert "\nUser=" in text and "User=root" not in text
    # systemd checks that ExecStart exists: point it at this venv's mailpki.
    here = Path(sys.executable).with_name("mailpki")
    assert here.exists()
    target = tmp_path / unit
    target.write_text(text.replace(INSTALLED, str(here)))
    proc = subprocess.run(
        [_analyze(), "verify", str(target)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on some mistakes (an unknown value is "ignored"): any output fails.
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "" and proc.stdout.strip() == "", proc.stderr + proc.stdout


def test_units_run_the_commands_that_exist() -> None:
    service = (UNITS / "mailpki.service").read_text()
    assert f"ExecStart={INSTALLED} serve --home /var/lib/mailpki" in service
    recovery = (UNITS / "mailpki-recovery.service").read_text()
    assert f"ExecStart={INSTALLED} recovery-service serve --home /var/lib/mailpki-krs" in recovery
