"""The README's first-CA walk-through, run line by line as a person would type it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough(heading: str = "## A first CA in five minutes") -> list[str]:
    text = README.read_text()
    section = text.split(heading, 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, f"the README lost its walk-through under {heading!r}"
    joined = block.group(1).replace("\\\n", " ")
    return [line.split("  #", 1)[0].strip() for line in joined.splitlines() if line.strip()]


def test_readme_walkthrough_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MAILPKI_HOME", None)
    ran = 0
    lines = (
        walkthrough()
        + walkthrough("## Keys, escrow and recovery")
        + walkthrough("## Directories and logon")
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
            f"README line failed: {line}\n{result.stdout}\n{result.stderr}"
        )
        ran += 1
    assert ran >= 25
    assert (tmp_path / "cdp" / "issuing.crl").exists()
    assert (tmp_path / "bob-recovered.p12").exists()
    assert len(list((tmp_path / "reissued").glob("*.p12"))) == 1
    assert (tmp_path / "frank.p12").exists() and (tmp_path / "hank.p12").exists()
