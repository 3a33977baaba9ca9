"""kill -9 during a renewal, on SQLite and PostgreSQL: reconcile and `directory sync`
bring the instance back to one current, published certificate per person.

- inside the transaction that stores the new certificate: nothing happened;
- after that commit, before delivery: `keys reconcile` revokes the undelivered new
  certificate and makes the old one current again; `directory sync` republishes it;
- after delivery, before publication: `directory sync` publishes the new certificate
  in place of the old one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from mailpki.ca.serials import to_hex
from mailpki.instance.instance import Instance
from mailpki.store.models import CertificateRecord
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

EMAIL = "alice@example.com"
PASSWORD = "renewal-crash-password-1"

HELPER = r"""
import json, os, signal, sys
from pathlib import Path

import mailpki.enrollment.enroll as enroll_module
from mailpki.instance.instance import Instance
from mailpki.instance.renewal import renew_one

job = json.loads(sys.argv[1])


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if job["target"] == "in-transaction":
    original = enroll_module.supersede

    def supersede(*args, **kwargs):
        original(*args, **kwargs)
        die()

    enroll_module.supersede = supersede

instance = Instance.open(Path(job["home"]))
renew_one(
    instance,
    job["email"],
    out=Path(job["out"]),
    actor="crash-test",
    password=job["password"].encode(),
    send_mail=False,
    on_step=lambda step: die() if step == job["target"] else None,
)
sys.exit(3)  # the kill never came
"""

CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")]
    ),
}


def ok(result):  # type: ignore[no-untyped-def]
    assert result.code == 0, (result.out, result.err)
    return result


def rows(home: Path) -> list[tuple[str, str, str | None]]:
    """(serial, status, superseded_by) of alice's certificates, oldest first."""
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            return [
                (serial, status, by)
                for serial, status, by in session.execute(
                    select(
                        CertificateRecord.serial,
                        CertificateRecord.status,
                        CertificateRecord.superseded_by,
                    )
                    .where(CertificateRecord.email == EMAIL)
                    .order_by(CertificateRecord.id)
                )
            ]
    finally:
        instance.close()


def published(home: Path) -> set[str]:
    instance = Instance.open(home)
    try:
        directory = instance.directories.directories()[0]
        entry = directory.find_by_mail(EMAIL)
        assert entry is not None
        return {
            f"{x509.load_der_x509_certificate(der).serial_number:X}"
            for der in directory.certificates(entry.dn)
        }
    finally:
        instance.close()


@pytest.mark.parametrize("target", ["in-transaction", "certified", "delivered"])
def test_kill_during_renewal_is_recovered(home: Path, tmp_path: Path, target: str) -> None:
    people = tmp_path / "people.csv"
    people.write_text(f"login,mail,name\nalice,{EMAIL},Alice Archer\n")
    ok(mailpki("directory", "import", "--home", home, people))
    for key, value in (("keymanager.key_type", "p256"), ("keymanager.pool_size", "0")):
        ok(mailpki("config", "set", "--home", home, key, value))
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    result = ok(
        mailpki(
            "enroll",
            "--home",
            home,
            "--email",
            EMAIL,
            "--name",
            "Alice Archer",
            "--out",
            tmp_path / "old.p12",
            "--password-file",
            tmp_path / "pw",
        )
    )
    old = to_hex(int(result.out.split("certificate ")[1].split(",")[0], 16))
    assert published(home) == {old}

    script = tmp_path / "helper.py"
    script.write_text(HELPER)
    job = {"home": str(home), "email": EMAIL, "out": str(tmp_path / "new.p12"),
           "password": PASSWORD, "target": target}  # fmt: skip
    proc = subprocess.run([sys.executable, str(script), json.dumps(job)], capture_output=True,
                          text=True, timeout=120, env=CHILD_ENV)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)

    if target == "in-transaction":
        assert rows(home) == [(old, "valid", None)]
    elif target == "certified":
        (_, _, new), (serial, status, _) = rows(home)
        assert new == serial and status == "valid"  # superseded in the same commit
        ok(mailpki("keys", "reconcile", "--all-pending", "--home", home))
        assert rows(home) == [(old, "valid", None), (new, "revoked", None)]
    else:
        (_, _, new), (serial, status, _) = rows(home)
        assert (new, status) == (serial, "valid")
        assert published(home) == {old}  # the kill came before the publication
    ok(mailpki("directory", "sync", "--home", home))
    current = [serial for serial, status, by in rows(home) if status == "valid" and by is None]
    assert len(current) == 1
    assert published(home) == set(current)
    ok(mailpki("audit", "verify", "--home", home))
    # And the person can renew again.
    ok(mailpki("renew", "--home", home, "--email", EMAIL, "--out", tmp_path / "again.p12",
               "--password-file", tmp_path / "pw"))  # fmt: skip
