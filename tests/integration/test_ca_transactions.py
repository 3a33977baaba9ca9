"""All-or-nothing: the audit record and the action commit together, also under concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from mailpki.audit import AuditLog
from mailpki.errors import AuditError
from mailpki.instance.instance import Instance
from mailpki.policy.person import Person


def person(n: int) -> Person:
    return Person.from_untrusted(
        name=f"User{n} Smith",
        email=f"user{n}@example.com",
        organisation="Example Corp",
        organisation_identifier="NTRGB-12345678",
    )


def test_failed_audit_write_means_no_certificate(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = Instance.open(home)
    before, _ = instance.ca.list_certificates()

    def broken(self: AuditLog, *args: object, **kwargs: object) -> None:
        raise AuditError("audit storage unavailable")

    monkeypatch.setattr(AuditLog, "append", broken)
    with pytest.raises(AuditError):
        instance.ca.issue_for_key(
            ec.generate_private_key(ec.SECP256R1()).public_key(), person(1), actor="test"
        )
    monkeypatch.undo()
    after, _ = instance.ca.list_certificates()
    assert after == before
    assert instance.verify_audit().ok


def test_failed_audit_write_means_no_revocation(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = Instance.open(home)
    issued = instance.ca.issue_for_key(
        ec.generate_private_key(ec.SECP256R1()).public_key(), person(2), actor="test"
    )
    serial = issued.certificate.serial_number

    def broken(self: AuditLog, *args: object, **kwargs: object) -> None:
        raise AuditError("audit storage unavailable")

    monkeypatch.setattr(AuditLog, "append", broken)
    with pytest.raises(AuditError):
        instance.ca.revoke(serial, x509.ReasonFlags.key_compromise, actor="test")
    monkeypatch.undo()
    assert instance.ca.get(serial).status == "valid"
    assert instance.ca.status(serial).status == "good"  # type: ignore[union-attr]


def test_concurrent_issuance_keeps_one_linear_audit_chain(home: Path) -> None:
    instance = Instance.open(home)
    keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(24)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        issued = list(
            pool.map(
                lambda i: instance.ca.issue_for_key(keys[i], person(i + 10), actor="test"),
                range(len(keys)),
            )
        )
    assert len({i.serial for i in issued}) == len(keys)
    _, total = instance.ca.list_certificates()
    assert total == len(keys)
    instance.seal()
    report = instance.verify_audit()
    assert report.ok, report.problems
