"""Recoveries that must be refused, and audited on both sides.

    python -m benchmarks.reliability.check_recovery

On a fresh SQLite instance with its embedded Key Recovery Service, with real admin
certificates revoked through the CA (so the OCSP responses say so), each case is tried
through the instance's own recovery use cases (signed messages, stapled OCSP):

  revoked requester            the admin who made the request, revoked after the
                               approvals, fetches
  approver revoked before      an officer revoked before approving approves; the
                               request then lacks its quorum and is fetched
  approver revoked after       an officer revoked after approving: the fetch counts
                               the quorum again and falls short
  no quorum                    fetched with 0, then 1, of the 2 approvals

A case counts as refused if the service says no and no key leaves it, and as audited if
the refusal is a `recovery.refused` record for that request in the service's log and in
the instance's log. Exit 0 only if every case is refused and audited.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography import x509
from sqlalchemy import select

from benchmarks.reliability.check_crash import instance_at, mailpki, new_instance
from mailpki.errors import RecoveryRefused
from mailpki.instance.enrollments import enroll_one
from mailpki.instance.instance import Instance
from mailpki.instance.recovery_admin import (
    AdminCredential,
    add_admin,
    approve_recovery,
    fetch_recovery,
    request_recovery,
)
from mailpki.recovery.service import RecoveryService
from mailpki.store.models import AuditRecord

ACTOR = "reliability-check"


@dataclass
class Outcome:
    refused: bool
    audited: bool


class World:
    """One instance, its admins by name, and bob's escrowed key to recover."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.home = work / "corp"
        new_instance(self.home)
        for key in ("per_admin_hour", "per_admin_day", "total_day", "average_minimum"):
            mailpki(
                "recovery-service", "config", "set", "--home", self.home / "krs",
                f"alerts.{key}", "1000",
            )  # fmt: skip
        self.admins: dict[str, AdminCredential] = {}
        with instance_at(self.home) as instance:
            enroll_one(
                instance, email="bob@example.com", name="Bob Smith", out=work / "bob.p12",
                actor=ACTOR, password=b"bob-password", key_type="p256",
            )  # fmt: skip
        for name in ("carol", "dave", "erin"):
            self.add(name, "recovery-admin" if name == "carol" else "recovery-officer")

    def add(self, name: str, role: str) -> AdminCredential:
        with instance_at(self.home) as instance:
            added = add_admin(
                instance, name=f"{name.title()} Admin", email=f"{name}@example.com",
                role=role, out=self.work / f"{name}.p12", password=None, actor=ACTOR,
            )  # fmt: skip
        assert added.generated_password is not None
        credential = AdminCredential.from_pkcs12(
            (self.work / f"{name}.p12").read_bytes(), added.generated_password.encode()
        )
        self.admins[name] = credential
        return credential

    def revoke(self, name: str) -> None:
        with instance_at(self.home) as instance:
            instance.ca.revoke(
                self.admins[name].certificate.serial_number,
                x509.ReasonFlags.key_compromise,
                actor=ACTOR,
            )

    def run(self, action: Callable[[Instance], object]) -> bool:
        """True if the service refused `action`."""
        with instance_at(self.home) as instance:
            try:
                action(instance)
            except RecoveryRefused:
                return True
        return False

    def request(self, admin: str = "carol") -> str:
        with instance_at(self.home) as instance:
            answer = request_recovery(
                instance, self.admins[admin], email="bob@example.com", serial=None,
                reason="reliability check", actor=ACTOR,
            )  # fmt: skip
        return str(answer["request_id"])

    def approve(self, request_id: str, officer: str) -> bool:
        return self.run(
            lambda i: approve_recovery(i, self.admins[officer], request_id, actor=ACTOR)
        )

    def fetch(self, request_id: str, admin: str = "carol") -> bool:
        return self.run(
            lambda i: fetch_recovery(
                i, self.admins[admin], request_id, new_password=b"new-password", actor=ACTOR
            )
        )

    def refusals(self, request_id: str) -> tuple[int, int]:
        """recovery.refused records naming `request_id`: (service's log, instance's log)."""

        def count(session_of: Instance | RecoveryService) -> int:
            with session_of.db.session() as session:
                rows = session.scalars(
                    select(AuditRecord.data).where(AuditRecord.event == "recovery.refused")
                )
                return sum(1 for data in rows if json.loads(data).get("request_id") == request_id)

        service = RecoveryService.open(self.home / "krs")
        try:
            on_service = count(service)
        finally:
            service.close()
        with instance_at(self.home) as instance:
            return on_service, count(instance)

    def recovered(self, request_id: str) -> bool:
        service = RecoveryService.open(self.home / "krs")
        try:
            return any(r["request_id"] == request_id for r in service.recoveries())
        finally:
            service.close()

    def outcome(self, request_id: str, refused: bool, refusals: int) -> Outcome:
        on_service, on_instance = self.refusals(request_id)
        return Outcome(
            refused=refused and not self.recovered(request_id),
            audited=on_service >= refusals and on_instance >= refusals,
        )


def revoked_requester(world: World) -> list[Outcome]:
    world.add("rita", "recovery-admin")
    request_id = world.request("rita")
    assert not world.approve(request_id, "dave") and not world.approve(request_id, "erin")
    world.revoke("rita")
    return [world.outcome(request_id, world.fetch(request_id, "rita"), 1)]


def approver_revoked_before(world: World) -> list[Outcome]:
    world.add("otto", "recovery-officer")
    request_id = world.request()
    assert not world.approve(request_id, "dave")
    world.revoke("otto")
    approve_refused = world.approve(request_id, "otto")
    first = world.outcome(request_id, approve_refused, 1)
    return [first, world.outcome(request_id, world.fetch(request_id), 2)]


def approver_revoked_after(world: World) -> list[Outcome]:
    world.add("oscar", "recovery-officer")
    request_id = world.request()
    assert not world.approve(request_id, "dave") and not world.approve(request_id, "oscar")
    world.revoke("oscar")
    return [world.outcome(request_id, world.fetch(request_id), 1)]


def no_quorum(world: World) -> list[Outcome]:
    request_id = world.request()
    outcomes = [world.outcome(request_id, world.fetch(request_id), 1)]
    assert not world.approve(request_id, "dave")
    outcomes.append(world.outcome(request_id, world.fetch(request_id), 2))
    return outcomes


CASES: dict[str, Callable[[World], list[Outcome]]] = {
    "revoked requester": revoked_requester,
    "approver revoked before approving": approver_revoked_before,
    "approver revoked after approving": approver_revoked_after,
    "no quorum (0 and 1 of 2 approvals)": no_quorum,
}


def main() -> int:
    ok = True
    with tempfile.TemporaryDirectory(prefix="mailpki-recovery-check-") as tmp:
        world = World(Path(tmp))
        # The control: an unspoiled recovery goes through (else every "refused" is hollow).
        control = world.request()
        assert not world.approve(control, "dave") and not world.approve(control, "erin")
        if world.fetch(control) or not world.recovered(control):
            print("recovery control: the unspoiled recovery was refused", flush=True)
            return 1
        for label, case in CASES.items():
            outcomes = case(world)
            refused = sum(o.refused for o in outcomes)
            audited = sum(o.refused and o.audited for o in outcomes)
            print(
                f"recovery, {label}: {len(outcomes)} tried, {refused} refused, "
                f"{audited} audited on both sides",
                flush=True,
            )
            ok = ok and refused == audited == len(outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
