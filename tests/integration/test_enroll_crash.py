"""kill -9 at every step of an enrollment: escrow stays ahead of delivery.

A helper process opens the instance and runs `enroll_one` (or a pool refill) with a
hook that sends itself SIGKILL at one named step: no `finally`, no atexit, no
rollback by Python. The test process then checks what the enrollment module
promises: no PKCS#12 without its escrow record, `keys reconcile` leaves every
escrowed key either delivered with a valid certificate or revoked with it, serials
stay unique, the audit log verifies, and the next enrollment works. On SQLite and
PostgreSQL.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from mailpki.ca.serials import to_hex
from mailpki.enrollment.enroll import STEPS
from mailpki.instance.instance import Instance
from mailpki.keymanager.pkcs12 import load_pkcs12
from mailpki.keystore.recovery_block import spki_sha256
from mailpki.store.models import (
    CertificateRecord,
    EscrowedKey,
    PooledKey,
    SerialReservation,
)
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

PASSWORD = b"crash-test-password-1"
EMAIL = "alice@example.com"

# The helper runs in its own interpreter; a kill at the target is a real SIGKILL.
HELPER = r"""
import json, os, signal, sys
from pathlib import Path

from mailpki.instance.enrollments import enroll_one, fill_pool
from mailpki.instance.instance import Instance
from mailpki.keymanager.manager import KeyManager

job = json.loads(sys.argv[1])
target = job["target"]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def hook(step):
    if step == target:
        die()


if target == "in-transaction":
    # Inside the certificate transaction, after the escrow row was flushed.
    original = KeyManager.record

    def record(self, session, block, **kwargs):
        original(self, session, block, **kwargs)
        die()

    KeyManager.record = record

instance = Instance.open(Path(job["home"]))
if job["mode"] == "pool-fill":
    fill_pool(instance, target=job["size"], progress=lambda n: die() if n == job["kill_after"] else None)
else:
    csr = Path(job["csr"]).read_bytes() if job.get("csr") else None
    enroll_one(
        instance,
        email=job["email"],
        name="Alice Smith",
        out=Path(job["out"]),
        actor="crash-test",
        password=job["password"].encode(),
        key_type=job.get("key_type"),
        signing_csr=csr,
        on_step=hook,
        send_mail=False,
    )
sys.exit(3)  # the kill never came
"""


# The source tree first, as pytest's own `pythonpath` setting has it.
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")]
    ),
}


def run_helper(tmp_path: Path, job: dict[str, object]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "crash_helper.py"
    if not script.exists():
        script.write_text(HELPER)
    return subprocess.run(
        [sys.executable, str(script), json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=120,
        env=CHILD_ENV,
    )


def assert_killed(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)


def signing_csr(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Alice Smith")]))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


# -- reading the instance's state ------------------------------------------------------


@dataclass(frozen=True)
class Escrow:
    serial: str
    email: str
    spki: str
    state: str
    cert_status: str


@contextmanager
def opened(home: Path) -> Iterator[Instance]:
    instance = Instance.open(home)
    try:
        yield instance
    finally:
        instance.close()


def escrows(home: Path) -> list[Escrow]:
    with opened(home) as instance, instance.db.session() as session:
        rows = session.execute(
            select(
                EscrowedKey.serial,
                EscrowedKey.owner_email,
                EscrowedKey.spki_sha256,
                EscrowedKey.state,
                CertificateRecord.status,
            )
            .join(CertificateRecord, CertificateRecord.serial == EscrowedKey.serial)
            .order_by(EscrowedKey.id)
        ).all()
        total = session.scalar(select(func.count()).select_from(EscrowedKey))
    assert total == len(rows), "an escrow record without its certificate"
    return [Escrow(*row) for row in rows]


def certificates_of(home: Path, email: str) -> list[tuple[str, str]]:
    """(serial, status) of every certificate issued to `email`, oldest first."""
    with opened(home) as instance, instance.db.session() as session:
        return [
            (serial, status)
            for serial, status in session.execute(
                select(CertificateRecord.serial, CertificateRecord.status)
                .where(CertificateRecord.email == email)
                .order_by(CertificateRecord.id)
            )
        ]


def pooled_spkis(home: Path) -> set[str]:
    with opened(home) as instance, instance.db.session() as session:
        return set(session.scalars(select(PooledKey.spki_sha256)))


def unused_reservations(home: Path) -> int:
    """Serials reserved (committed) but never used by a stored certificate."""
    with opened(home) as instance, instance.db.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(SerialReservation)
                .where(SerialReservation.serial.not_in(select(CertificateRecord.serial)))
            )
            or 0
        )


@functools.lru_cache(maxsize=64)
def _opened_pkcs12(data: bytes, password: bytes) -> tuple[int, str]:
    """(serial, key hash) of a PKCS#12; opening one costs 600,000 PBKDF2 rounds."""
    loaded = load_pkcs12(data, password)
    return loaded.certificate.serial_number, spki_sha256(loaded.key.public_key())


def p12_spki(path: Path) -> str:
    return _opened_pkcs12(path.read_bytes(), PASSWORD)[1]


# -- the invariants --------------------------------------------------------------------


def check_pkcs12_files(home: Path, out_dir: Path, password: bytes = PASSWORD) -> list[str]:
    """Every PKCS#12 in `out_dir` has an escrow record for its certificate, holding its
    key; no half-written temp file is left. Returns the files' serials."""
    records = {e.serial: e for e in escrows(home)}
    serials = []
    for path in sorted(out_dir.glob("*.p12")):
        number, spki = _opened_pkcs12(path.read_bytes(), password)
        serial = to_hex(number)
        assert serial in records, f"{path.name}: a PKCS#12 without an escrow record"
        assert records[serial].spki == spki
        assert records[serial].email == EMAIL
        serials.append(serial)
    assert not [p.name for p in out_dir.iterdir() if p.name.endswith(".tmp")]
    return serials


def check_settled(home: Path) -> list[Escrow]:
    """After reconcile: delivered with a valid certificate, or revoked with it."""
    records = escrows(home)
    for record in records:
        assert (record.state, record.cert_status) in {
            ("delivered", "valid"),
            ("revoked", "revoked"),
        }, record
    return records


def check_unique_serials(home: Path) -> None:
    with opened(home) as instance, instance.db.session() as session:
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
            assert total == distinct, f"duplicate {column}"
        ders = list(session.execute(select(CertificateRecord.serial, CertificateRecord.der)))
    numbers = [x509.load_der_x509_certificate(der).serial_number for _, der in ders]
    assert len(set(numbers)) == len(numbers)
    assert all(to_hex(n) == serial for n, (serial, _) in zip(numbers, ders, strict=True))


def check_audit(home: Path) -> None:
    result = mailpki("audit", "verify", "--home", home)
    assert result.code == 0, result.out + result.err


def reconcile(home: Path) -> list[str]:
    result = mailpki("keys", "reconcile", "--home", home, "--all-pending")
    assert result.code == 0, result.out + result.err
    # The CLI prints serials zero-padded; the store (and these checks) keep `to_hex`.
    return [
        to_hex(int(line.split()[1], 16))
        for line in result.out.splitlines()
        if line.startswith("revoked ")
    ]


def enroll(home: Path, out: Path, password_file: Path, *extra: str) -> str:
    result = mailpki(
        "enroll",
        "--home",
        home,
        "--email",
        EMAIL,
        "--name",
        "Alice Smith",
        "--out",
        out,
        "--password-file",
        password_file,
        *extra,
    )
    assert result.code == 0, result.out + result.err
    return to_hex(int(result.out.split("certificate ", 1)[1].split(",", 1)[0], 16))


# -- kill -9 at each step ----------------------------------------------------------------

# What the crash leaves, per kill point: (escrow state of Alice's key or None,
# PKCS#12 written?, Alice's certificates stored).
AFTER_KILL: dict[str, tuple[str | None, bool, int]] = {
    "policy": (None, False, 0),
    "signing-cert": (None, False, 1),  # dual key: only the signing certificate
    "key": (None, False, 0),
    "in-transaction": (None, False, 0),  # rolled back by the database
    "certified": ("pending", False, 1),
    "packaged": ("pending", False, 1),
    "handed-over": ("pending", True, 1),
    "announced": ("pending", True, 1),  # shown, but not yet recorded: revoked to be safe
    "delivered": ("delivered", True, 1),
}
KILL_POINTS = [*STEPS[:3], "in-transaction", *STEPS[3:]]
# Every point on SQLite; on PostgreSQL (slower to set up) the ones where the database
# does the work: a transaction cut by the kill, a committed pending record, delivery.
POSTGRES_POINTS = ("in-transaction", "certified", "handed-over", "delivered")
CASES = [pytest.param("sqlite", point, id=f"sqlite-{point}") for point in KILL_POINTS] + [
    pytest.param("postgresql", point, id=f"postgresql-{point}") for point in POSTGRES_POINTS
]


def test_every_step_is_covered() -> None:
    assert set(AFTER_KILL) == {*STEPS, "in-transaction"}
    assert set(POSTGRES_POINTS) <= set(KILL_POINTS)
    assert KILL_POINTS.index("in-transaction") < KILL_POINTS.index("certified")


@pytest.mark.parametrize(("database_url", "point"), CASES, indirect=["database_url"])
def test_kill_during_enrollment(home: Path, tmp_path: Path, point: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    password_file = tmp_path / "password"
    password_file.write_bytes(PASSWORD + b"\n")
    job: dict[str, object] = {
        "mode": "enroll",
        "home": str(home),
        "target": point,
        "email": EMAIL,
        "out": str(out_dir / "alice.p12"),
        "password": PASSWORD.decode(),
        "key_type": "p256",
    }
    if point == "signing-cert":
        job["csr"] = str(signing_csr(tmp_path / "signing.csr"))

    assert_killed(run_helper(tmp_path, job))

    # Right after the crash.
    state, written, certified = AFTER_KILL[point]
    records = escrows(home)
    assert [r.state for r in records] == ([state] if state else [])
    assert (out_dir / "alice.p12").exists() == written
    assert len(certificates_of(home, EMAIL)) == certified
    assert unused_reservations(home) == (1 if point == "in-transaction" else 0)
    assert check_pkcs12_files(home, out_dir) == ([records[0].serial] if written else [])
    check_unique_serials(home)
    check_audit(home)

    if point == "signing-cert":
        assert not (out_dir / "alice-signing.pem").exists()
    # Within its delivery lease a pending record is left alone (a delivery may still be
    # running); --all-pending (no enrollment can be running) revokes exactly it.
    plain = mailpki("keys", "reconcile", "--home", home)
    assert plain.code == 0 and "0 revoked" in plain.out, plain.out + plain.err
    assert escrows(home) == records
    revoked = reconcile(home)
    assert revoked == [r.serial for r in records if r.state == "pending"]
    settled = check_settled(home)
    assert [r.state for r in settled] == (
        [] if state is None else ["revoked" if state == "pending" else "delivered"]
    )
    assert reconcile(home) == []  # nothing left to do
    check_pkcs12_files(home, out_dir)
    check_unique_serials(home)
    check_audit(home)

    # The next enrollment works and gets a new serial and a new key.
    serial = enroll(home, out_dir / "alice-2.p12", password_file, "--key-type", "p256")
    assert serial not in {r.serial for r in records}
    files = check_pkcs12_files(home, out_dir)
    assert serial in files
    final = check_settled(home)
    assert [r.serial for r in final if r.state == "delivered"][-1] == serial
    assert len({r.spki for r in final}) == len(final)
    check_unique_serials(home)
    check_audit(home)


# -- the key pool ----------------------------------------------------------------------


def test_kill_during_pool_refill_and_after_taking_a_pooled_key(home: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    password_file = tmp_path / "password"
    password_file.write_bytes(PASSWORD)
    assert mailpki("config", "set", "--home", home, "keymanager.key_type", "p256").code == 0

    # Killed after the first of three keys was committed: that one stays, usable.
    job = {"mode": "pool-fill", "home": str(home), "target": "", "size": 3, "kill_after": 1}
    assert_killed(run_helper(tmp_path, job))
    assert len(pooled_spkis(home)) == 1
    result = mailpki("keys", "pool", "fill", "--home", home, "--size", "2")
    assert result.code == 0, result.err
    assert "1 p256 keys added; the pool holds 2" in result.out
    check_audit(home)

    # Killed right after taking a pooled key: the key is gone with the process, never
    # stored and never handed out.
    before = pooled_spkis(home)
    enroll_job = {
        "mode": "enroll",
        "home": str(home),
        "email": EMAIL,
        "out": str(out_dir / "killed.p12"),
        "password": PASSWORD.decode(),
        "key_type": None,  # keymanager.key_type: p256, from the pool
    }
    assert_killed(run_helper(tmp_path, {**enroll_job, "target": "key"}))
    after = pooled_spkis(home)
    assert len(after) == 1 and after < before
    lost = before - after

    # Killed after the certificate was stored with a pooled key: pending, then revoked.
    assert_killed(run_helper(tmp_path, {**enroll_job, "target": "certified"}))
    assert pooled_spkis(home) == set()
    [pending] = escrows(home)
    assert pending.state == "pending" and {pending.spki} == after
    assert reconcile(home) == [pending.serial]

    # Refill; two enrollments take one pooled key each, never one already taken.
    assert mailpki("keys", "pool", "fill", "--home", home, "--size", "2").code == 0
    pool = pooled_spkis(home)
    assert len(pool) == 2 and not pool & (lost | after)
    taken = []
    for n in (1, 2):
        enroll(home, out_dir / f"alice-{n}.p12", password_file)
        taken.append(p12_spki(out_dir / f"alice-{n}.p12"))
        assert len(pooled_spkis(home)) == 2 - n
    assert taken[0] != taken[1] and set(taken) == pool

    # The pool is empty: the next key is fresh.
    enroll(home, out_dir / "alice-3.p12", password_file)
    fresh = p12_spki(out_dir / "alice-3.p12")
    assert fresh not in pool | lost | after
    final = check_settled(home)
    assert [r.state for r in final] == ["revoked", "delivered", "delivered", "delivered"]
    assert not {r.spki for r in final} & lost
    check_pkcs12_files(home, out_dir)
    check_unique_serials(home)
    check_audit(home)


def test_concurrent_enrollments_never_share_a_pooled_key(home: Path, tmp_path: Path) -> None:
    """Three processes race for a pool of two: each pooled key goes to exactly one of
    them, and the one that finds the pool empty makes a fresh key."""
    assert mailpki("config", "set", "--home", home, "keymanager.key_type", "p256").code == 0
    assert mailpki("keys", "pool", "fill", "--home", home, "--size", "2").code == 0
    pool = pooled_spkis(home)
    assert len(pool) == 2
    password_file = tmp_path / "password"
    password_file.write_bytes(PASSWORD)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailpki",
                "enroll",
                "--home",
                str(home),
                "--email",
                f"user{n}@example.com",
                "--name",
                f"User{n} Smith",
                "--out",
                str(tmp_path / f"user{n}.p12"),
                "--password-file",
                str(password_file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=CHILD_ENV,
        )
        for n in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
    spkis = [p12_spki(tmp_path / f"user{n}.p12") for n in range(3)]
    assert len(set(spkis)) == 3
    assert pooled_spkis(home) == set()
    assert set(spkis) & pool == pool
    assert [r.state for r in check_settled(home)] == ["delivered"] * 3
    assert {r.spki for r in escrows(home)} == set(spkis)
    check_unique_serials(home)
    check_audit(home)


def test_reconcile_settles_a_record_whose_certificate_was_revoked_meanwhile(
    sqlite_home: Path, tmp_path: Path
) -> None:
    """An administrator revoked the crashed enrollment's certificate before reconcile ran:
    reconcile used to fail on it for ever ("already revoked"), leaving it pending."""
    job = {
        "mode": "enroll",
        "home": str(sqlite_home),
        "target": "certified",
        "email": EMAIL,
        "out": str(tmp_path / "alice.p12"),
        "password": PASSWORD.decode(),
        "key_type": "p256",
    }
    assert_killed(run_helper(tmp_path, job))
    [pending] = escrows(sqlite_home)
    assert pending.state == "pending"
    result = mailpki(
        "ca", "revoke", pending.serial, "--reason", "superseded", "--home", sqlite_home
    )
    assert result.code == 0, result.err

    assert reconcile(sqlite_home) == [pending.serial]
    [settled] = check_settled(sqlite_home)
    assert (settled.state, settled.cert_status) == ("revoked", "revoked")
    assert reconcile(sqlite_home) == []
    check_audit(sqlite_home)
