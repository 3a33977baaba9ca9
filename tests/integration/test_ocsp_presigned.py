"""Pre-signed OCSP answers against a real database, with two server processes'
worth of CA objects on it (SQLite and PostgreSQL): signed right, refreshed at once on
revocation, and another server stops serving a stale "good" at its next sync."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from mailpki.errors import StoreError
from mailpki.instance.instance import Instance
from tests.integration.cli_helpers import openssl
from tests.integration.test_cli_ca import issue


def _status(der: bytes) -> ocsp.OCSPResponse:
    resp = ocsp.load_der_ocsp_response(der)
    assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return resp


def _openssl_says(home: Path, tmp_path: Path, der: bytes, cert: Path) -> str:
    path = tmp_path / "resp.der"
    path.write_bytes(der)
    out = openssl(
        "ocsp",
        "-respin",
        path,
        "-issuer",
        home / "ca" / "issuing.pem",
        "-cert",
        cert,
        "-CAfile",
        home / "ca" / "root.pem",
    )
    assert "Response verify OK" in out.stdout + out.stderr
    return out.stdout


def test_two_servers_share_presigned_answers(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice_pem, alice = issue(home, tmp_path, "alice")
    bob_pem, bob = issue(home, tmp_path, "bob")
    a, b = Instance.open(home), Instance.open(home)
    try:
        signed = a.ca.presigned.refresh_all().signed
        assert signed >= 2  # every unexpired certificate of the issuing CA
        assert a.ca.presigned.refresh_all().signed == 0  # nothing due any more
        b.ca.presigned.sync()
        responder_b = b.ca.responder()
        request = responder_b.request_der(int(alice, 16))

        # B answers from memory: it neither signs nor reads the store.
        def no_store(serial: int) -> None:
            raise AssertionError("the pre-signed path read the store")

        monkeypatch.setattr(responder_b, "_lookup", no_store)
        monkeypatch.setattr(responder_b, "_sign", no_store)
        good = responder_b.respond(request)
        resp = _status(good)
        assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert resp.next_update_utc - resp.this_update_utc == b.ca.settings.ocsp_validity
        assert "good" in _openssl_says(home, tmp_path, good, alice_pem)
        monkeypatch.undo()

        # A revokes: it signs the "revoked" answer at once and stores it.
        a.ca.revoke(int(alice, 16), x509.ReasonFlags.key_compromise, actor="test")
        # B picks it up at its next sync (every 10 s in a server).
        b.ca.presigned.sync()
        monkeypatch.setattr(responder_b, "_sign", no_store)
        revoked = responder_b.respond(request)
        monkeypatch.undo()
        resp = _status(revoked)
        assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
        assert resp.revocation_reason is x509.ReasonFlags.key_compromise
        text = _openssl_says(home, tmp_path, revoked, alice_pem)
        assert "revoked" in text and "keyCompromise" in text

        # A revokes bob but cannot store the new answer: B still drops its "good".
        request_bob = responder_b.request_der(int(bob, 16))
        assert _status(responder_b.respond(request_bob)).certificate_status is (
            ocsp.OCSPCertStatus.GOOD
        )

        def broken(serial: int) -> None:
            raise StoreError("database error: simulated")

        monkeypatch.setattr(a.ca.presigned, "refresh", broken)
        a.ca.revoke(int(bob, 16), x509.ReasonFlags.superseded, actor="test")
        monkeypatch.undo()
        b.ca.presigned.sync()
        assert _status(responder_b.respond(request_bob)).certificate_status is (
            ocsp.OCSPCertStatus.REVOKED
        )
        # The next background pass signs and stores bob's "revoked" answer.
        assert b.ca.presigned.refresh_due() == 1
        a.ca.presigned.sync()
        answer = a.ca.responder().respond(request_bob)
        assert _status(answer).certificate_status is ocsp.OCSPCertStatus.REVOKED
        assert "revoked" in _openssl_says(home, tmp_path, answer, bob_pem)
    finally:
        a.close()
        b.close()


def test_a_stalled_sync_stops_the_memory_answers(home: Path, tmp_path: Path) -> None:
    _, alice = issue(home, tmp_path, "alice")
    instance = Instance.open(home)
    try:
        instance.ca.presigned.refresh_all()
        instance.ca.presigned.sync()
        responder = instance.ca.responder()
        request = responder.request_der(int(alice, 16))
        first = responder.respond(request)
        assert responder.respond(request) == first  # the same pre-signed bytes
        responder.mark_synced(time.monotonic() - 3600)  # no effect: only moves forward
        responder._synced_at = time.monotonic() - 61  # the last sync 61 s ago
        again = responder.respond(request)
        assert again != first  # signed afresh from the store's status
        assert _status(again).certificate_status is ocsp.OCSPCertStatus.GOOD
    finally:
        instance.close()
