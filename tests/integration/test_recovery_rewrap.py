"""Transport key rotation and `keys rewrap`, end to end, on SQLite and PostgreSQL.

Blocks of both formats (a first-format RSA-OAEP block and hybrid ones) are made by
real enrollments; the service's key is rotated with the real CLI; a rewrap is broken
off by an injected failure after its first batch and finished by the CLI; then the
OLD key files are deleted and a recovery with the full quorum still returns the
original private key: every block now opens with the new key alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailpki.instance.instance import Instance
from mailpki.instance.rewrap import blocks_to_rewrap, rewrap_all
from mailpki.keystore.hybrid_wrap import is_hybrid
from mailpki.store.models import EscrowedKey
from tests.integration.cli_helpers import mailpki
from tests.integration.test_recovery_cli import (
    CORE_TEAM,
    NEW_PASSWORD,
    enroll,
    instance_records,
    krs_records,
    load_p12,
    ok,
    private_der,
    service_log_intact,
    team_for,
    write_password,
)

pytestmark = pytest.mark.integration


class Interrupted(Exception):
    pass


def rows(home: Path) -> dict[str, EscrowedKey]:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            found = {r.owner_email: r for r in session.query(EscrowedKey).all()}
            session.expunge_all()
            return found
    finally:
        instance.close()


def test_rotate_rewrap_resume_and_recover_with_the_new_key_alone(
    home: Path, tmp_path: Path
) -> None:
    assert ok(mailpki("config", "get", "--home", home, "recovery.wrap")).out.strip() == (
        "hybrid-mlkem768"
    )  # the default of a new instance
    ok(mailpki("config", "set", "--home", home, "recovery.wrap", "rsa-oaep"))
    bob = enroll(home, tmp_path, "bob")  # a first-format block
    ok(mailpki("config", "set", "--home", home, "recovery.wrap", "hybrid-mlkem768"))
    for name in ("alice", "amy", "anna"):
        enroll(home, tmp_path, name)
    before = rows(home)
    assert before["bob@example.com"].wrap == "rsa-oaep"
    assert not is_hybrid(before["bob@example.com"].wrapped_key)
    assert before["alice@example.com"].wrap == "hybrid-mlkem768"
    old_key_id = before["alice@example.com"].krs_key_id

    rotated = ok(mailpki("recovery-service", "rotate-key", "--home", home / "krs"))
    assert "new transport key" in rotated.out
    [rotation] = krs_records(home, "transport_key.rotated")
    new_key_id = rotation["data"]["new_key_id"]
    assert new_key_id != old_key_id and rotation["data"]["old_key_id"] == old_key_id

    # A run broken off after its first batch (of 2 blocks): those stay done.
    def fail_on_second(done: int) -> None:
        if done:
            raise Interrupted

    instance = Instance.open(home)
    try:
        with pytest.raises(Interrupted):
            rewrap_all(instance, actor="test", batch=2, before_batch=fail_on_second)
        assert blocks_to_rewrap(instance) == 2
    finally:
        instance.close()
    half = rows(home)
    assert sorted(r.krs_key_id == new_key_id for r in half.values()) == [False, False, True, True]
    assert len(instance_records(home, "key.rewrapped")) == 2

    # The CLI resumes with the rest.
    resumed = ok(mailpki("keys", "rewrap", "--home", home, "--batch", "2"))
    assert "2 of 2 blocks re-wrapped" in resumed.out
    after = rows(home)
    assert {r.krs_key_id for r in after.values()} == {new_key_id}
    assert {r.wrap for r in after.values()} == {"hybrid-mlkem768"}
    assert all(is_hybrid(r.wrapped_key) for r in after.values())
    for email, row in after.items():  # the escrowed private key itself is untouched
        assert (row.nonce, row.ciphertext) == (before[email].nonce, before[email].ciphertext)
    assert "0 of 0 blocks" in ok(mailpki("keys", "rewrap", "--home", home)).out

    # Audited per block on both sides.
    ours = instance_records(home, "key.rewrapped")
    theirs = krs_records(home, "key.rewrapped")
    assert sorted(r["data"]["serial"] for r in ours) == sorted(r.serial for r in after.values())
    assert {r["data"]["serial"] for r in theirs} == {r.serial for r in after.values()}
    assert {r["data"]["to_key_id"] for r in theirs} == {new_key_id}
    assert ok(mailpki("audit", "verify", "--home", home))
    service_log_intact(home)

    # The old key files gone, bob's (once first-format) key still recovers.
    keys = home / "krs" / "keys"
    (keys / "krs-transport.pem").unlink()
    (keys / "krs-transport-mlkem.mlkem.json").unlink()
    team = team_for(home, tmp_path, CORE_TEAM)
    request = ok(
        team.run("request", "--email", "bob@example.com", "--reason", "lost laptop", admin="carol")
    )
    request_id = request.out.strip()
    ok(team.approve(request_id, "dave"))
    ok(team.approve(request_id, "erin"))
    out = tmp_path / "recovered.p12"
    new_pw = write_password(tmp_path / "new-pw", NEW_PASSWORD)
    ok(team.fetch(request_id, "carol", out, "--new-password-file", new_pw))
    recovered_key, _ = load_p12(out, NEW_PASSWORD)
    original_key, _ = load_p12(bob.p12, bob.password)
    assert private_der(recovered_key) == private_der(original_key)

    # New enrollments escrow to the new key.
    enroll(home, tmp_path, "carl")
    assert rows(home)["carl@example.com"].krs_key_id == new_key_id


def test_rewrap_refuses_a_bad_batch_size(home: Path) -> None:
    result = mailpki("keys", "rewrap", "--home", home, "--batch", "0")
    assert result.code != 0 and "--batch must be between 1" in result.err
