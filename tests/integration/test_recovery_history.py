"""A person's whole key history in one recovery (`recovery request --all-keys`).

A person renewed twice has three escrowed keys; one request, one quorum and one fetch
give one PKCS#12 with all three, the newest first (the default key), which the real
`openssl pkcs12`/`openssl cms` and NSS's `pk12util` read. Every key is its own
`key.recovered` record in both logs, and the anomaly rules count keys.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mailpki.ca.serials import show_serial
from tests.fixtures.smtp import SMTPServer
from tests.integration.cli_helpers import mailpki, openssl
from tests.integration.test_recovery_cli import (
    CORE_TEAM,
    REQUEST_ID,
    Team,
    alerts_of,
    enroll,
    instance_records,
    krs_records,
    ok,
    refused,
    requests_of,
    service_log_intact,
    team_for,
    write_password,
)

pytestmark = pytest.mark.integration

NEW_PASSWORD = "a-new-password-for-the-history"
RENEW_PASSWORD = "renewal-password-for-bob-1"


def renew(home: Path, folder: Path, user: str, n: int) -> str:
    """Renew `user`'s current certificate; the new serial as the service stores it."""
    pw = write_password(folder / "renew.pw", RENEW_PASSWORD)
    out = folder / f"{user}-renewed-{n}.p12"
    result = ok(
        mailpki("renew", "--home", home, "--email", f"{user}@example.com", "--out", out,
                "--password-file", pw)
    )  # fmt: skip
    loaded = pkcs12.load_key_and_certificates(out.read_bytes(), RENEW_PASSWORD.encode())
    assert loaded[1] is not None, result.out
    return format(loaded[1].serial_number, "X")


def history(home: Path, folder: Path, user: str) -> tuple[list[str], Path]:
    """(serials oldest first, the first certificate's PEM) of a user renewed twice."""
    first = enroll(home, folder, user)
    serials = [first.serial, renew(home, folder, user, 1), renew(home, folder, user, 2)]
    cert = pkcs12.load_key_and_certificates(first.p12.read_bytes(), first.password.encode())[1]
    assert cert is not None
    pem = folder / f"{user}-first.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return serials, pem


def request_all(team: Team, user: str, *extra: str) -> str:
    result = ok(
        team.run("request", "--email", f"{user}@example.com", "--all-keys", *extra, admin="carol")
    )
    request_id = result.out.strip()
    assert REQUEST_ID.fullmatch(request_id), result.out
    return request_id


def test_all_keys_of_a_person_renewed_twice_in_one_pkcs12(
    sqlite_home: Path, tmp_path: Path
) -> None:
    home = sqlite_home
    team = team_for(home, tmp_path, CORE_TEAM)
    serials, first_pem = history(home, tmp_path, "bob")
    oldest, _, newest = serials
    # Mail encrypted to the first certificate, years ago.
    secret = b"Quarterly figures, encrypted to the first certificate.\n"
    (tmp_path / "msg.txt").write_bytes(secret)
    openssl("cms", "-encrypt", "-binary", "-aes256", "-in", tmp_path / "msg.txt", "-out",
            tmp_path / "msg.p7m", first_pem)  # fmt: skip

    requested = ok(
        team.run("request", "--email", "bob@example.com", "--all-keys", "--reason", "new laptop",
                 admin="carol")
    )  # fmt: skip
    request_id = requested.out.strip()
    assert "3 keys" in requested.err and show_serial(newest) in requested.err
    listed = requests_of(home)[request_id]
    assert listed["key_count"] == 3
    assert listed["target_serials"] == list(reversed(serials))
    shown = ok(mailpki("recovery", "list", "--home", home)).out
    assert f"bob@example.com ({show_serial(newest)}, all 3 keys)" in shown
    ok(team.approve(request_id, "dave"))
    ok(team.approve(request_id, "erin"))
    out = tmp_path / "history.p12"
    new_pw = write_password(tmp_path / "new.pw", NEW_PASSWORD)
    fetched = ok(team.fetch(request_id, "carol", out, "--new-password-file", new_pw))
    assert "recovered 3 keys of bob@example.com" in fetched.out

    # The default key (the one a one-key reader takes) is the newest.
    key, cert, others = pkcs12.load_key_and_certificates(out.read_bytes(), NEW_PASSWORD.encode())
    assert cert is not None and format(cert.serial_number, "X") == newest
    assert key is not None and key.public_key() == cert.public_key()
    assert {format(c.serial_number, "X") for c in others} >= set(serials[:2])

    # openssl: three keys, three certificates with their own localKeyId, newest first.
    info = openssl("pkcs12", "-in", out, "-passin", f"file:{new_pw}", "-info", "-nodes").stdout
    assert info.count("BEGIN PRIVATE KEY") == 3
    names = re.findall(r"friendlyName: (.+)", info)
    # Serials in the names as the CLI prints them (zero-padded to 32 digits).
    assert names[0] == f"bob@example.com (recovered S/MIME {show_serial(newest)}, newest)"
    assert any(f"recovered S/MIME {show_serial(oldest)}, until" in n for n in names)
    assert len(set(re.findall(r"localKeyID: ([0-9A-F ]+)", info))) == 3

    # The old message decrypts with the first key, as openssl exports it from the file.
    keys_pem = openssl(
        "pkcs12", "-in", out, "-passin", f"file:{new_pw}", "-nocerts", "-nodes"
    ).stdout
    blocks = re.findall(r"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----", keys_pem, re.S)
    assert len(blocks) == 3
    first_cert = x509.load_pem_x509_certificate(first_pem.read_bytes())
    matching = [
        b
        for b in blocks
        if serialization.load_pem_private_key(b.encode(), None).public_key()
        == first_cert.public_key()
    ]
    assert len(matching) == 1
    (tmp_path / "first.key").write_text(matching[0] + "\n")
    plain = subprocess.run(
        ["openssl", "cms", "-decrypt", "-in", tmp_path / "msg.p7m", "-recip", first_pem,
         "-inkey", tmp_path / "first.key"],
        capture_output=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert plain == secret

    # NSS (Thunderbird's pk12util) imports all three keys and certificates.
    nss = tmp_path / "nss"
    nss.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"], check=True)
    subprocess.run(
        ["pk12util", "-i", out, "-d", f"sql:{nss}", "-W", NEW_PASSWORD, "-K", ""],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    keys = subprocess.run(
        ["certutil", "-K", "-d", f"sql:{nss}"], capture_output=True, text=True, check=True
    ).stdout
    assert len(re.findall(r"^<\s*\d+>", keys, re.M)) == 3, keys
    listed = subprocess.run(
        ["certutil", "-L", "-d", f"sql:{nss}"], capture_output=True, text=True, check=True
    ).stdout
    assert "u,u,u" in listed  # the person's certificates, with their keys

    # Every key is its own key.recovered record, on both sides.
    krs = [r["data"] for r in krs_records(home, "key.recovered")]
    assert sorted(r["target_serial"] for r in krs) == sorted(serials)
    assert {r["request_id"] for r in krs} == {request_id}
    ours = [r["data"] for r in instance_records(home, "key.recovered")]
    assert [r["serial"] for r in ours] == list(reversed(serials))
    assert {r["request_id"] for r in ours} == {request_id}
    reported = ok(mailpki("recovery", "report", "--home", home, "--json")).out
    for serial in serials:
        assert serial in reported
    ok(mailpki("audit", "verify", "--home", home))
    service_log_intact(home)

    # Suspecting carol: every key she recovered is revoked, bob gets ONE new certificate.
    reissued = ok(
        mailpki("recovery", "reissue", "--home", home, "--recovered-by", "carol@example.com",
                "--out", tmp_path / "reissued", "--password-file", new_pw)
    ).out  # fmt: skip
    assert reissued.count("new certificate") == 1, reissued
    assert reissued.count("reissued above") == 2, reissued
    for serial in serials:
        assert f"{show_serial(serial)} revoked" in reissued
    assert len(list((tmp_path / "reissued").glob("*.p12"))) == 1


def test_the_anomaly_rules_count_keys_not_requests(
    sqlite_home: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    """per_admin_hour = 2: one request for three keys is the third recovery: held."""
    home = sqlite_home
    settings = {
        "alerts.contacts": "sec@example.com",
        "alerts.per_admin_hour": "2",
        "alerts.hold": "true",
        "smtp.host": smtp_server.host,
        "smtp.port": str(smtp_server.port),
    }
    for key, value in settings.items():
        ok(mailpki("recovery-service", "config", "set", "--home", home / "krs", key, value))
    team = team_for(home, tmp_path, CORE_TEAM)
    history(home, tmp_path, "bob")
    request_id = request_all(team, "bob")
    ok(team.approve(request_id, "dave"))
    ok(team.approve(request_id, "erin"))
    out = tmp_path / "held.p12"
    refused(team.fetch(request_id, "carol", out), "it is held until sec@example.com", code=4)
    assert not out.exists()
    [alert] = alerts_of(home)
    assert alert["rule"] == "per-admin-hour" and alert["request_id"] == request_id
    assert "3 keys recovered by this admin in an hour (limit 2)" in alert["detail"]
    assert krs_records(home, "key.recovered") == []
    assert instance_records(home, "key.recovered") == []
    assert "all 3 keys of bob@example.com" in smtp_server.messages[0].text


def test_bad_input_is_one_line_and_changes_nothing(sqlite_home: Path, tmp_path: Path) -> None:
    home = sqlite_home
    team = team_for(home, tmp_path, CORE_TEAM)
    bob = enroll(home, tmp_path, "bob")
    before_krs, before_ours = len(krs_records(home)), len(instance_records(home))
    cases = [
        (("--email", "nobody@example.com", "--all-keys"), "no escrowed key for nobody@example.com"),
        (("--email", "bob@example.com", "--all-keys", "--serial", bob.serial),
         "--all-keys asks for every key of the person: leave out --serial"),
    ]  # fmt: skip
    # An admin has a certificate but no escrowed key (admin keys are never escrowed).
    cases.append((("--email", "dave@example.com", "--all-keys"), "no escrowed key for dave"))
    for args, reason in cases:
        refused(team.run("request", *args, admin="carol"), reason)
    assert len(krs_records(home)) == before_krs
    assert len(instance_records(home)) == before_ours
    assert requests_of(home) == {}


def test_the_service_refuses_a_history_that_mixes_people(sqlite_home: Path, tmp_path: Path) -> None:
    """A hand-built, correctly signed request whose older key belongs to someone else, or
    lists a key twice, is refused by the service and recorded there as refused."""
    import base64

    from mailpki.errors import RecoveryRefused
    from mailpki.instance.instance import Instance
    from mailpki.instance.recovery_admin import AdminCredential, signed_message
    from mailpki.recovery.protocol import EscrowedTarget, encode_targets

    home = sqlite_home
    team = team_for(home, tmp_path, CORE_TEAM)
    enroll(home, tmp_path, "bob")
    enroll(home, tmp_path, "alice")
    instance = Instance.open(home)
    try:
        admin = AdminCredential.from_pkcs12(
            team.p12["carol"].read_bytes(), team.pw["carol"].read_text().strip().encode()
        )
        blocks = {
            user: instance.key_manager.block_for(email=f"{user}@example.com")
            for user in ("bob", "alice")
        }

        def target(user: str) -> EscrowedTarget:
            serial, block = blocks[user]
            return EscrowedTarget(instance.ca.certificate_der(int(serial, 16)), block.wrapped_key)

        bob = target("bob")
        for older, reason in (
            ([target("alice")], "a key-history request covers one person"),
            ([bob], "is listed twice in the request"),
        ):
            body = {
                "target_certificate": base64.b64encode(bob.certificate).decode(),
                "wrapped_key": base64.b64encode(bob.wrapped_key).decode(),
                "reason": "",
                "older_keys": encode_targets(older),
            }
            with pytest.raises(RecoveryRefused, match=reason):
                instance.recovery_client.send(signed_message(instance, admin, "request", body))
    finally:
        instance.close()
    assert requests_of(home) == {}
    assert len(krs_records(home, "recovery.refused")) == 2
    service_log_intact(home)
