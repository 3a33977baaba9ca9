"""Running the real CLI and the real openssl from tests."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from mailpki.cli.main import app


@dataclass
class Result:
    code: int
    out: str
    err: str


def mailpki(*args: str | Path) -> Result:
    """The CLI in process (fast); stdout and stderr kept apart."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def mailpki_process(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """The CLI as a person runs it: a separate process through the entry point."""
    proc = subprocess.run(
        [sys.executable, "-m", "mailpki", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def openssl(
    *args: str | Path, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["openssl", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"openssl {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def make_csr(folder: Path, name: str = "alice", key: str = "ec") -> Path:
    """A CSR made by the real openssl (P-256 by default; 'rsa' for RSA-2048)."""
    keyfile, csr = folder / f"{name}.key", folder / f"{name}.csr"
    if key == "ec":
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    else:
        newkey = ["-newkey", "rsa:2048"]
    openssl(
        "req",
        "-new",
        *newkey,
        "-nodes",
        "-subj",
        f"/CN={name} from the CSR/O=Evil Corp",
        "-keyout",
        keyfile,
        "-out",
        csr,
    )
    return csr
