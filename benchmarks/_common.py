"""Shared helpers of the benchmarks: throwaway instances, PostgreSQL, progress, results.

Every benchmark ends by printing one JSON line (the last line of its stdout) of the
form ``{"benchmark": NAME, ..., "targets": [{"name", "value", "unit", "target",
"op", "ok"}]}``; ``scripts/bench`` collects those lines into its summary table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ORG = "Bench Corp"
# A real-looking domain: pkilint refuses reserved names (.example, localhost, IPs)
# in the CDP/AIA URLs and the rfc822Name SANs of the linted certificates.
DOMAIN = "bench-corp.com"
ORG_ID = "NTRGB-12345678"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Set by the scripts/bench runner: options meant for other benchmarks are ignored.
LENIENT_ENV = "MAILPKI_BENCH_LENIENT"


# -- arguments and results ---------------------------------------------------------------


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """parse_args, or parse_known_args under scripts/bench (options are shared there)."""
    if os.environ.get(LENIENT_ENV) == "1":
        args, unknown = parser.parse_known_args()
        if unknown:
            log(f"(ignoring options for other benchmarks: {' '.join(unknown)})")
        return args
    return parser.parse_args()


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        metavar="URL",
        help="an EMPTY database for the throwaway instance (default: SQLite in the temp dir), "
        "e.g. postgresql+psycopg://user@127.0.0.1:5432/bench",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help=f"start a throwaway PostgreSQL cluster ({PG_BIN}) and use it",
    )


def target(name: str, value: float | None, unit: str, goal: float, op: str) -> dict[str, Any]:
    """One figure against its target; op is '>=' (at least) or '<=' (at most)."""
    ok = None if value is None else (value >= goal if op == ">=" else value <= goal)
    return {"name": name, "value": value, "unit": unit, "target": goal, "op": op, "ok": ok}


def emit(result: dict[str, Any]) -> None:
    """The one JSON line every benchmark ends with."""
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=False, default=str), flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). getrusage's ru_maxrss is not used on Linux:
    a process started by a large parent inherits the parent's peak there."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Runs a command and prints its wall time and peak RSS; started from a small process so
# that the command's ru_maxrss does not inherit a large parent's peak.
_MEASURE = """
import os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), time.perf_counter() - t0, usage.ru_maxrss / 1024)
"""


def measure_command(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one run of `cmd`; SystemExit if it fails."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=False
    )
    try:
        code, seconds, peak = proc.stdout.split()
    except ValueError:
        raise SystemExit(f"{cmd[0]} could not be measured: {proc.stderr}") from None
    if int(code) != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed (exit {code}): {proc.stderr}")
    return float(seconds), float(peak)


def machine() -> dict[str, Any]:
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = None
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load1_at_start": load1}


# -- progress ----------------------------------------------------------------------------


class Progress:
    """A rich progress bar on a terminal, a line every few seconds otherwise."""

    def __init__(self, description: str, total: int | None, *, every: float = 5.0) -> None:
        self.description = description
        self.total = total
        self.every = every
        self._rich: Any = None
        self._task: Any = None
        self._last = 0.0
        self._start = time.monotonic()

    def __enter__(self) -> Progress:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total)
        else:
            log(f"{self.description} ...")
        return self

    def update(self, done: int) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=done)
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            of = f"/{self.total}" if self.total else ""
            log(f"  {self.description}: {done}{of} ({now - self._start:.0f} s)")

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
        else:
            log(f"  {self.description}: done in {time.monotonic() - self._start:.1f} s")


# -- CSRs and instances ------------------------------------------------------------------


def make_csr(index: int) -> bytes:
    """A PEM CSR for a fresh P-256 key (the CA uses only its public key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench user {index}")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def person_fields(index: int) -> dict[str, str]:
    """Keyword arguments for operations.issue_from_csr / Person.from_untrusted."""
    return {
        "name": f"Bench User{index}",
        "given_name": "Bench",
        "surname": f"User{index}",
        "email": f"user{index}@{DOMAIN}",
    }


def person(index: int) -> Any:
    from mailpki.policy.person import Person

    return Person.from_untrusted(
        **person_fields(index), organisation=ORG, organisation_identifier=ORG_ID
    )


def create_instance(home: Path, *, ca_key_type: str, database_url: str | None) -> None:
    """A throwaway instance in home (which must not exist yet); closed again."""
    from mailpki.instance.bootstrap import InitOptions, initialise

    options = InitOptions(
        org=ORG,
        domain=DOMAIN,
        org_id=ORG_ID,
        ca_key_type=ca_key_type,
        database_url=database_url,
    )
    result = initialise(home, options, actor="bench")
    result.instance.close()


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- throwaway PostgreSQL --------------------------------------------------------------------


def _as_postgres(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    user = "postgres" if os.geteuid() == 0 else None
    return subprocess.run(cmd, user=user, check=True, capture_output=True, **kwargs)


@contextlib.contextmanager
def throwaway_postgres(workdir: Path) -> Iterator[str]:
    """Start a PostgreSQL cluster on 127.0.0.1 in workdir; yield its SQLAlchemy URL."""
    if not (PG_BIN / "initdb").exists():
        raise SystemExit(f"--postgres: no PostgreSQL in {PG_BIN} (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="pg-", dir=workdir))  # one per cluster started
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        for path in (base, sock):
            shutil.chown(path, "postgres")
    port = free_port()
    _as_postgres(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
    )
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -F"
    _as_postgres(
        [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(base / "log"),
            "-w",
            "start",
        ]
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])


@contextlib.contextmanager
def database_for(args: argparse.Namespace, workdir: Path) -> Iterator[str | None]:
    """The database URL the benchmark's instance uses (None: SQLite in the home)."""
    if getattr(args, "postgres", False):
        with throwaway_postgres(workdir) as url:
            yield url
    else:
        yield getattr(args, "database", None)


def database_kind(url: str | None) -> str:
    return "sqlite" if not url or url.startswith("sqlite") else url.split(":", 1)[0]
