"""The documentation's walk-throughs (a first CA, escrow and recovery, directories), run
line by line as a person would type them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def walkthrough(page: str, heading: str, root: Path = DOCS) -> list[str]:
    """The commands of the first `sh` block under `heading` in `root`/`page`."""
    text = (root / page).read_text()
    assert heading in text, f"{page} lost its section {heading!r}"
    section = text.split(heading, 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, f"{page} lost its walk-through under {heading!r}"
    joined = block.group(1).replace("\\\n", " ")
    return [line.split("  #", 1)[0].strip() for line in joined.splitlines() if line.strip()]


def test_docs_walkthrough_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MAILPKI_HOME", None)
    ran = 0
    lines = (
        walkthrough("cli-reference.md", "## A first CA in five minutes")
        + walkthrough("keys-and-recovery.md", "## Keys, escrow and recovery")
        + walkthrough("directories.md", "## Directories and logon")
    )
    for line in lines:
        if line.startswith("mailpki serve"):
            continue  # runs until stopped; test_serve_ocsp covers the server
        if "SERIAL" in line:
            listed = subprocess.run(
                ["mailpki", "certs", "list", "--home", "./corp", "--json"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            line = line.replace("SERIAL", json.loads(listed.stdout)[0]["serial"])
        result = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, (
            f"documented line failed: {line}\n{result.stdout}\n{result.stderr}"
        )
        ran += 1
    assert ran >= 25
    assert (tmp_path / "cdp" / "issuing.crl").exists()
    assert (tmp_path / "bob-recovered.p12").exists()
    assert len(list((tmp_path / "reissued").glob("*.p12"))) == 1
    assert (tmp_path / "frank.p12").exists() and (tmp_path / "hank.p12").exists()


def test_readme_tour_runs(tmp_path: Path) -> None:
    """The README's three-line tour: init and enroll run as written (serve is covered by
    the server tests)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MAILPKI_HOME", None)
    lines = walkthrough("README.md", "## A short tour", root=ROOT)
    assert any(line.startswith("mailpki serve") for line in lines)
    for line in lines:
        if line.startswith("mailpki serve"):
            continue
        result = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"README line failed: {line}\n{result.stderr}"
    assert (tmp_path / "bob.p12").exists()
