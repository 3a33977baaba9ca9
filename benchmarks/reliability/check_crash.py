"""kill -9 at each step of enroll, bulk-enroll and recovery fetch, and what it leaves.

    python -m benchmarks.reliability.check_crash            # every kill point
    python -m benchmarks.reliability.check_crash --quick    # fewer bulk-enroll points

Each kill runs the real command line in its own process (SQLite instance, software
keys) and kills it with SIGKILL at one point: at a named step (the command wraps one of
its own functions to kill itself there, see `_crash_child`), or from outside, by time
(bulk-enroll, as soon as its first PKCS#12 exists, and after its fifth printed line).
Then `mailpki keys reconcile --all-pending` runs, as docs/keys-and-recovery.md says to after a crash,
and the instance is checked with the instance's own reader:

  keys without escrow          a PKCS#12 written, or a certificate for a central key,
                               with no escrow record
  delivered without password   an escrow record marked delivered whose generated password
                               never reached the command's output
  duplicate serials            in reservations, certificates or escrow records
  left pending                 escrow records reconcile did not settle
  workers left running         bulk-enroll worker processes alive after the parent died
  unlogged recoveries          a recovered PKCS#12 missing from either audit log, or
                               written without its printed password (after the fetch
                               is run again, as after any crash)
  audit failures               `mailpki audit verify` (both logs) not exit 0

One line per command, "kill -9 during enroll: N tried, N left consistent (...)"; exit 0
only if every kill left the instance consistent.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import func, select

from mailpki.enrollment.enroll import STEPS
from mailpki.errors import MailPKIError
from mailpki.instance.instance import Instance
from mailpki.keymanager.pkcs12 import load_pkcs12
from mailpki.store.models import AuditRecord, CertificateRecord, EscrowedKey, SerialReservation

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    # stdout buffered, as a person's shell has it: "before-flush" then loses the lines.
    **{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    "COLUMNS": "400",  # no wrapped lines in what is parsed
}
PASSWORD_LINE = re.compile(r"PKCS#12 password \(shown once, not stored\): (\S+)")
CERTIFICATE_LINE = re.compile(r": certificate ([0-9A-F]+), key escrowed")
# Single-key enrollment never reaches the dual-key step.
ENROLL_POINTS = [f"step:{s}" for s in STEPS if s != "signing-cert"] + ["in-transaction"]
BULK_POINTS = [
    ("before-flush", 2),
    ("after-flush", 2),
    ("after-record", 2),
    ("worker step:certified", 1),
    ("worker step:handed-over", 1),
    ("timed: first file", 0),
    ("timed: fifth line", 0),
]
QUICK_BULK_POINTS = [BULK_POINTS[1], BULK_POINTS[3], BULK_POINTS[6]]
LABELS = {"enroll": "enroll", "bulk-enroll": "bulk-enroll", "recovery-fetch": "recovery fetch"}
FETCH_POINTS = ["fetch-uncommitted", "fetch-answered", "fetch-audited", "fetch-written"]


@dataclass
class Findings:
    keys_without_escrow: int = 0
    delivered_without_password: int = 0
    duplicate_serials: int = 0
    left_pending: int = 0
    workers_left_running: int = 0
    unlogged_recoveries: int = 0
    audit_failures: int = 0
    not_killed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self) if f.name != "notes")

    def add(self, other: Findings) -> None:
        for f in fields(self):
            if f.name == "notes":
                self.notes.extend(other.notes)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# -- running the command line --------------------------------------------------------------


def mailpki(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mailpki", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"mailpki {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return proc


def killed_at(point: str, nth: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The command, killed by itself at `point` (see `_crash_child`)."""
    job = json.dumps({"point": point, "nth": nth, "argv": argv})
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.reliability._crash_child", job],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=600,
    )


def survivors(marker: str, wait: float = 5.0) -> int:
    """Processes (other than this one) whose command line holds `marker`, once they
    have had `wait` seconds to die."""
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker.encode() in cmdline and state != "Z":
                alive.append(int(entry.name))
        if not alive or time.monotonic() > deadline:
            return len(alive)
        time.sleep(0.1)


@contextmanager
def instance_at(home: Path) -> Iterator[Instance]:
    instance = Instance.open(home)
    try:
        yield instance
    finally:
        instance.close()


def new_instance(home: Path) -> None:
    mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
    )  # fmt: skip


# -- what a crash left ---------------------------------------------------------------------


def inspect(home: Path, emails: set[str], printed: dict[str, str], files: list[Path]) -> Findings:
    """After reconcile: the invariants, for the people of one kill. `printed` maps each
    serial whose line (with its generated password) reached the output to that password."""
    found = Findings()
    with instance_at(home) as instance, instance.db.session() as session:
        records = session.execute(
            select(EscrowedKey.serial, EscrowedKey.owner_email, EscrowedKey.state).where(
                EscrowedKey.owner_email.in_(emails)
            )
        ).all()
        certificates = session.scalars(
            select(CertificateRecord.serial).where(CertificateRecord.email.in_(emails))
        ).all()
        for column in (
            SerialReservation.serial,
            CertificateRecord.serial,
            CertificateRecord.fingerprint,
            EscrowedKey.serial,
            EscrowedKey.spki_sha256,
        ):
            total, distinct = session.execute(
                select(func.count(column), func.count(column.distinct()))
            ).one()
            found.duplicate_serials += total - distinct
    # Serials as numbers: the command line prints them zero-padded, the store does not.
    printed = {int(serial, 16): password for serial, password in printed.items()}
    records = [(int(serial, 16), email, state) for serial, email, state in records]
    certificates = [int(serial, 16) for serial in certificates]
    escrowed = {serial for serial, _, _ in records}
    owners = {email for _, email, _ in records}
    found.keys_without_escrow += sum(1 for serial in certificates if serial not in escrowed)
    for path in files:
        email = path.name.removesuffix(".p12")
        if path.exists() and email not in owners:
            found.keys_without_escrow += 1
            found.notes.append(f"{path.name}: a PKCS#12 without an escrow record")
    for serial, email, state in records:
        if state == "delivered" and serial not in printed:
            found.delivered_without_password += 1
            found.notes.append(f"{email} {serial:X}: delivered, its password never printed")
        if state == "pending":
            found.left_pending += 1
    for serial, password in printed.items():
        path = next((p for p in files if p.exists() and _serial_of(p, password) == serial), None)
        if path is None and serial in escrowed:
            found.notes.append(f"{serial:X}: printed, but no file opens with its password")
            found.delivered_without_password += 1
    if mailpki("audit", "verify", "--home", home, check=False).returncode != 0:
        found.audit_failures += 1
    return found


def _serial_of(path: Path, password: str) -> int | None:
    try:
        loaded = load_pkcs12(path.read_bytes(), password.encode())
    except MailPKIError:  # another person's file: not this password
        return None
    return int(loaded.certificate.serial_number)


def reconcile(home: Path) -> None:
    mailpki("keys", "reconcile", "--home", home, "--all-pending")


# -- enroll ----------------------------------------------------------------------------------


def check_enroll(work: Path) -> list[Findings]:
    home = work / "enroll"
    new_instance(home)
    results: list[Findings] = []
    for index, point in enumerate(ENROLL_POINTS):
        email = f"enroll{index}@example.com"
        out = work / f"{email}.p12"
        argv = [
            "enroll", "--home", str(home), "--email", email, "--name", f"User{index} Smith",
            "--out", str(out), "--key-type", "p256",
        ]  # fmt: skip
        proc = killed_at(point, 1, argv)
        found = Findings()
        if proc.returncode != -signal.SIGKILL:
            found.not_killed += 1
            found.notes.append(f"enroll {point}: exit {proc.returncode} {proc.stderr[-300:]}")
        printed = {}
        serial = CERTIFICATE_LINE.search(proc.stdout)
        password = PASSWORD_LINE.search(proc.stdout)
        if serial and password:
            printed[serial.group(1)] = password.group(1)
        reconcile(home)
        found.add(inspect(home, {email}, printed, [out]))
        _report("enroll", point, found)
        results.append(found)
    return results


# -- bulk-enroll -----------------------------------------------------------------------------


def people_csv(path: Path, prefix: str, count: int) -> set[str]:
    emails = {f"{prefix}{n}@example.com" for n in range(count)}
    lines = ["email,name,key_type"] + [
        f"{email},{email.split('@')[0].title()} Smith,p256" for email in sorted(emails)
    ]
    path.write_text("\n".join(lines) + "\n")
    return emails


def printed_rows(stdout: str) -> dict[str, str]:
    """serial -> password of every complete CSV line on stdout."""
    complete = stdout[: stdout.rfind("\n") + 1]
    return {
        row["serial"]: row["password"]
        for row in csv.DictReader(io.StringIO(complete))
        if row.get("serial") and row.get("password")
    }


def timed_kill(argv: list[str], out_dir: Path, stdout_path: Path, when: str) -> str:
    """The unmodified command line, killed from outside once `when` is seen."""
    with stdout_path.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailpki", *argv],
            stdout=sink,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if when == "timed: first file" and out_dir.is_dir() and any(out_dir.glob("*.p12")):
                break
            if when == "timed: fifth line" and stdout_path.read_bytes().count(b"\n") >= 6:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return stdout_path.read_text()


def kill_bulk(home: Path, work: Path, prefix: str, point: str, nth: int) -> Findings:
    """One bulk-enroll of 16 people (P-256, 2 workers) killed at `point`, then reconcile
    and the invariants."""
    people = work / f"{prefix}people.csv"
    emails = people_csv(people, prefix, 16)
    out_dir = work / f"{prefix}out"
    argv = [
        "bulk-enroll", "--home", str(home), "--input", str(people), "--out", str(out_dir),
        "--workers", "2",
    ]  # fmt: skip
    found = Findings()
    if point.startswith("timed"):
        stdout = timed_kill(argv, out_dir, work / f"{prefix}stdout.csv", point)
    else:
        worker = point.startswith("worker ")
        proc = killed_at(point.removeprefix("worker "), nth, argv)
        stdout = proc.stdout
        expected = 1 if worker else -signal.SIGKILL  # a dead worker: the parent reports
        if proc.returncode != expected:
            found.not_killed += 1
            found.notes.append(f"bulk {point}: exit {proc.returncode} {proc.stderr[-300:]}")
    found.workers_left_running += survivors(str(out_dir))
    files = sorted(out_dir.glob("*.p12")) if out_dir.is_dir() else []
    reconcile(home)
    found.add(inspect(home, emails, printed_rows(stdout), files))
    _report("bulk-enroll", point, found)
    return found


def check_bulk(work: Path, quick: bool) -> list[Findings]:
    home = work / "bulk"
    new_instance(home)
    return [
        kill_bulk(home, work, f"bulk{index}-", point, nth)
        for index, (point, nth) in enumerate(QUICK_BULK_POINTS if quick else BULK_POINTS)
    ]


# -- recovery fetch --------------------------------------------------------------------------


def check_fetch(work: Path) -> list[Findings]:
    from mailpki.instance.enrollments import enroll_one
    from mailpki.instance.recovery_admin import (
        AdminCredential,
        add_admin,
        approve_recovery,
        request_recovery,
    )

    home = work / "recovery"
    new_instance(home)
    for key, value in (("alerts.per_admin_hour", "1000"), ("alerts.per_admin_day", "1000"),
                       ("alerts.total_day", "1000"), ("alerts.average_minimum", "1000")):  # fmt: skip
        mailpki("recovery-service", "config", "set", "--home", home / "krs", key, value)
    admins: dict[str, AdminCredential] = {}
    with instance_at(home) as instance:
        for name, role in (("carol", "recovery-admin"), ("dave", "recovery-officer"),
                           ("erin", "recovery-officer")):  # fmt: skip
            added = add_admin(
                instance, name=f"{name.title()} Admin", email=f"{name}@example.com",
                role=role, out=work / f"{name}.p12", password=None, actor="check",
            )  # fmt: skip
            assert added.generated_password is not None
            (work / f"{name}.pw").write_text(added.generated_password + "\n")
            admins[name] = AdminCredential.from_pkcs12(
                (work / f"{name}.p12").read_bytes(), added.generated_password.encode()
            )
        enroll_one(
            instance, email="bob@example.com", name="Bob Smith", out=work / "bob.p12",
            actor="check", password=b"bob-password", key_type="p256",
        )  # fmt: skip
    results: list[Findings] = []
    for point in FETCH_POINTS:
        with instance_at(home) as instance:
            request_id = request_recovery(
                instance, admins["carol"], email="bob@example.com", serial=None,
                reason="crash check", actor="check",
            )["request_id"]  # fmt: skip
            for officer in ("dave", "erin"):
                approve_recovery(instance, admins[officer], request_id, actor="check")
        out = work / f"recovered-{point}.p12"
        argv = [
            "recovery", "fetch", request_id, "--home", str(home), "--p12", str(work / "carol.p12"),
            "--password-file", str(work / "carol.pw"), "--out", str(out),
        ]  # fmt: skip
        proc = killed_at(point, 1, argv)
        found = Findings()
        if proc.returncode != -signal.SIGKILL:
            found.not_killed += 1
            found.notes.append(f"fetch {point}: exit {proc.returncode} {proc.stderr[-300:]}")
        # As after any crash: run the same fetch again. It goes through if the service
        # had not committed; else it is refused, and the instance records the
        # interrupted recovery as failed (a request is fetched once).
        again = work / f"recovered-{point}-again.p12"
        retry = mailpki(*argv[:-1], str(again), check=False)
        if retry.returncode not in (0, 4):
            found.notes.append(f"fetch {point}: the fetch again: exit {retry.returncode}")
            found.not_killed += 1
        for path, stdout in ((out, proc.stdout), (again, retry.stdout)):
            if not path.exists():
                continue
            password = PASSWORD_LINE.search(stdout)
            logged = _recovered_in_both_logs(home, request_id)
            if password is None or not logged:
                found.unlogged_recoveries += 1
                found.notes.append(f"fetch {point}: {path.name}, password printed "
                                   f"{bool(password)}, in both logs {logged}")  # fmt: skip
        if mailpki("audit", "verify", "--home", home, check=False).returncode != 0:
            found.audit_failures += 1
        _report("recovery fetch", point, found)
        results.append(found)
    return results


def _recovered_in_both_logs(home: Path, request_id: str) -> bool:
    from mailpki.recovery.service import RecoveryService

    def has(session_factory: Instance | RecoveryService) -> bool:
        with session_factory.db.session() as session:
            rows = session.scalars(
                select(AuditRecord.data).where(AuditRecord.event == "key.recovered")
            )
            return any(json.loads(data).get("request_id") == request_id for data in rows)

    service = RecoveryService.open(home / "krs")
    try:
        on_service = has(service)
    finally:
        service.close()
    with instance_at(home) as instance:
        return on_service and has(instance)


# -- the report ------------------------------------------------------------------------------


def _report(command: str, point: str, found: Findings) -> None:
    verdict = "consistent" if found.clean else "NOT consistent"
    print(f"  {command}, killed at {point}: {verdict}", file=sys.stderr, flush=True)
    for note in found.notes:
        print(f"    {note}", file=sys.stderr, flush=True)


def summary(label: str, tried: int, consistent: int, found: Findings) -> str:
    counts = [
        f"{found.keys_without_escrow} keys without escrow",
        f"{found.delivered_without_password} delivered files without a printed password",
        f"{found.duplicate_serials} duplicate serials",
        f"{found.left_pending} left pending after reconcile",
    ]
    if label == "bulk-enroll":
        counts.append(f"{found.workers_left_running} workers left running")
    if label == "recovery fetch":
        counts = [
            f"{found.unlogged_recoveries} recovered files missing from a log or without "
            "their printed password"
        ]
    counts.append(f"{found.audit_failures} audit failures")
    return (
        f"kill -9 during {label}: {tried} tried, {consistent} left consistent ({', '.join(counts)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="three bulk-enroll kill points")
    parser.add_argument(
        "--only", choices=("enroll", "bulk-enroll", "recovery-fetch"), action="append"
    )
    args, _ = parser.parse_known_args()
    chosen = args.only or ["enroll", "bulk-enroll", "recovery-fetch"]
    ok = True
    with tempfile.TemporaryDirectory(prefix="mailpki-crash-") as tmp:
        work = Path(tmp)
        runs = {
            "enroll": lambda: check_enroll(work),
            "bulk-enroll": lambda: check_bulk(work, args.quick),
            "recovery-fetch": lambda: check_fetch(work),
        }
        for name in chosen:
            results = runs[name]()
            total = Findings()
            for found in results:
                total.add(found)
            consistent = sum(1 for found in results if found.clean)
            print(summary(LABELS[name], len(results), consistent, total), flush=True)
            ok = ok and consistent == len(results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
