"""The quorum of a recovery is counted again when the key is fetched.

An officer whose certificate is revoked (say for keyCompromise) after approving no
longer counts: the fetch staples the current OCSP status of every approving officer's
certificate and the Key Recovery Service counts only the approvals whose officers are
still valid and unrevoked. A fetch that falls below the quorum is refused, and the
refusal is in both logs (the service's and the instance's). Real revoked certificates,
real OCSP responses from the instance's responder, the real CLI.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from mailpki.errors import RecoveryRefused
from mailpki.instance.instance import Instance
from mailpki.instance.recovery_admin import AdminCredential, signed_message, stapled_status
from mailpki.recovery.protocol import ApproverStatus, encode_approvers, new_nonce
from tests.integration.cli_helpers import mailpki
from tests.integration.test_recovery_cli import (
    RELAXED,
    Refusals,
    Team,
    enroll,
    init_instance,
    instance_records,
    krs_records,
    ok,
    refused,
    requests_of,
    service_log_intact,
    team_for,
)

pytestmark = pytest.mark.integration

TEAM = {
    "carol": "recovery-admin",
    "dave": "recovery-officer",
    "erin": "recovery-officer",
    "olga": "recovery-officer",
    "ruth": "recovery-admin",
}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Team:
    folder = tmp_path_factory.mktemp("quorum")
    home = init_instance(folder / "corp")
    for key, value in RELAXED.items():  # many recoveries by one admin: no alert holds
        ok(mailpki("recovery-service", "config", "set", "--home", home / "krs", key, value))
    made = team_for(home, folder, TEAM)
    enroll(home, folder, "bob")
    return made


def revoke(team: Team, name: str) -> None:
    ok(mailpki("ca", "revoke", "--home", team.home, team.serial[name], "--reason", "keyCompromise"))


def new_officer(team: Team, folder: Path, name: str) -> Team:
    extended = team.extended(folder)
    extended.add(name, "recovery-officer")
    return extended


def instance_refusals(home: Path, request_id: str) -> list[dict[str, Any]]:
    return [
        r
        for r in instance_records(home, "recovery.refused")
        if r["data"].get("request_id") == request_id
    ]


def both_logs_intact(home: Path) -> None:
    assert mailpki("audit", "verify", "--home", home).code == 0
    service_log_intact(home)


def test_an_officer_revoked_after_approving_no_longer_counts(team: Team, tmp_path: Path) -> None:
    crew = new_officer(team, tmp_path, "oscar")
    request_id = crew.request("carol", "bob")
    ok(crew.approve(request_id, "dave"))
    ok(crew.approve(request_id, "oscar"))
    assert requests_of(team.home)[request_id]["state"] == "approved"
    revoke(crew, "oscar")  # keyCompromise, after approving

    out = tmp_path / "bob.p12"
    log = Refusals(team.home)
    line = refused(crew.fetch(request_id, "carol", out), "1 valid approvals of the 2", code=4)
    assert "oscar@example.com" in line and "revoked" in line
    assert "dave@example.com" not in line  # dave still counts
    record = log.expect_one("1 valid approvals of the 2", actor="carol@example.com")
    assert record["data"]["action"] == "fetch" and record["data"]["request_id"] == request_id
    [mine] = instance_refusals(team.home, request_id)
    assert mine["data"]["action"] == "fetch" and "oscar@example.com" in mine["data"]["reason"]
    assert mine["actor"] == "carol@example.com"
    assert not out.exists()
    assert not [
        r for r in krs_records(team.home, "key.recovered") if r["data"]["request_id"] == request_id
    ]

    # A second, unrevoked officer restores the quorum; the lapsed approval stays uncounted.
    ok(crew.approve(request_id, "erin"))
    ok(crew.fetch(request_id, "carol", out))
    assert out.is_file()
    [recovered] = [
        r for r in krs_records(team.home, "key.recovered") if r["data"]["request_id"] == request_id
    ]
    assert recovered["data"]["approved_by"] == ["dave@example.com", "erin@example.com"]
    [lapsed] = recovered["data"]["approvals_not_counted"]
    assert lapsed.startswith("oscar@example.com (") and "revoked" in lapsed
    both_logs_intact(team.home)


def test_an_officer_revoked_before_approving_is_refused(team: Team, tmp_path: Path) -> None:
    crew = new_officer(team, tmp_path, "otto")
    request_id = crew.request("carol", "bob")
    ok(crew.approve(request_id, "dave"))
    revoke(crew, "otto")
    log = Refusals(team.home)
    refused(crew.approve(request_id, "otto"), "the signer's certificate is revoked", code=4)
    log.expect_one("revoked", actor="otto@example.com")
    assert instance_refusals(team.home, request_id)[-1]["data"]["action"] == "approve"
    row = requests_of(team.home)[request_id]
    assert (row["state"], row["approved_by"]) == ("pending", ["dave@example.com"])
    out = tmp_path / "bob.p12"
    log = Refusals(team.home)
    refused(crew.fetch(request_id, "carol", out), "has 1 of the 2 approvals it needs", code=4)
    log.expect_one("has 1 of the 2", actor="carol@example.com")
    assert instance_refusals(team.home, request_id)[-1]["data"]["action"] == "fetch"
    assert not out.exists()
    both_logs_intact(team.home)


def test_a_requester_revoked_after_the_approvals_is_refused_on_both_sides(
    team: Team, tmp_path: Path
) -> None:
    crew = team.extended(tmp_path)
    crew.add("rita", "recovery-admin")
    request_id = crew.approved("rita", "bob")
    revoke(crew, "rita")
    out = tmp_path / "bob.p12"
    log = Refusals(team.home)
    refused(crew.fetch(request_id, "rita", out), "the signer's certificate is revoked", code=4)
    log.expect_one("revoked", actor="rita@example.com")
    [mine] = instance_refusals(team.home, request_id)
    assert mine["actor"] == "rita@example.com" and "revoked" in mine["data"]["reason"]
    assert not out.exists()
    assert requests_of(team.home)[request_id]["state"] == "approved"
    both_logs_intact(team.home)


# -- a fetch made by hand: the service trusts only fresh, matching status ------------------


def credential(team: Team, name: str) -> AdminCredential:
    return AdminCredential.from_pkcs12(
        team.p12[name].read_bytes(), team.pw[name].read_text().strip().encode()
    )


def certificate(team: Team, name: str) -> x509.Certificate:
    return credential(team, name).certificate


def fetch_with(instance: Instance, team: Team, request_id: str, approvers: str, nonce: str) -> Any:
    message = signed_message(
        instance,
        credential(team, "carol"),
        "fetch",
        {"request_id": request_id, "approvers": approvers},
        nonce=nonce,
    )
    return instance.recovery_client.send(message)


def statuses(
    instance: Instance, team: Team, names: list[str], nonce: str, *, cert_of: str | None = None
) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    found = []
    for name in names:
        cert = certificate(team, cert_of or name)
        found.append(
            ApproverStatus(cert.public_bytes(Encoding.DER), stapled_status(instance, cert, nonce))
        )
    return encode_approvers(found)


SPOILED = {
    # No status at all: an approval whose officer's standing is unknown does not count.
    "none": lambda i, t, n: "",
    # Only one of the two officers.
    "one-of-two": lambda i, t, n: statuses(i, t, ["dave"], n),
    # Status requested for another message (a replay of an older, good answer).
    "another-nonce": lambda i, t, n: statuses(i, t, ["dave", "erin"], new_nonce()),
    # A good status of a certificate that did not approve, in place of one that did.
    "another-certificate": lambda i, t, n: statuses(i, t, ["dave", "carol"], n),
    # Two entries both with dave's certificate: one officer counts once.
    "twice-the-same": lambda i, t, n: statuses(i, t, ["dave", "dave"], n),
    "not-base64": lambda i, t, n: "%%%:%%%",
}


@pytest.mark.parametrize("attack", list(SPOILED))
def test_approver_status_that_does_not_match_is_not_counted(team: Team, attack: str) -> None:
    request_id = team.approved("carol", "bob")
    instance = Instance.open(team.home)
    try:
        nonce = new_nonce()
        log = Refusals(team.home)
        approvers = SPOILED[attack](instance, team, nonce)
        with pytest.raises(RecoveryRefused) as refusal:
            fetch_with(instance, team, request_id, approvers, nonce)
        reason = "not valid base64" if attack == "not-base64" else "valid approvals of the 2"
        assert reason in str(refusal.value), str(refusal.value)
        log.expect_one(reason)
        assert requests_of(team.home)[request_id]["state"] == "approved"
        # The control: the same fetch with the right status goes through.
        nonce = new_nonce()
        answer = fetch_with(
            instance, team, request_id, statuses(instance, team, ["dave", "erin"], nonce), nonce
        )
    finally:
        instance.close()
    assert answer["approved_by"] == ["dave@example.com", "erin@example.com"]
    assert base64.b64decode(answer["encrypted_key"])
    assert requests_of(team.home)[request_id]["state"] == "recovered"
