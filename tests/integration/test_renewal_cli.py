"""`mailpki renew` and `mailpki certs expiring` end to end, on SQLite and PostgreSQL.

A renewal makes a new escrowed key and certificate; the old certificate stays valid
(OCSP good, not on the CRL, `openssl verify` accepts it) but is superseded and
withdrawn from the directory, where the new one takes its place."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from mailpki.ca.serials import show_serial, to_hex
from mailpki.errors import RenewalRefused
from mailpki.instance.instance import Instance
from mailpki.instance.renewal import plan, renew_one
from mailpki.keymanager.pkcs12 import load_pkcs12
from mailpki.store.models import CertificateRecord, EscrowedKey
from tests.integration.cli_helpers import mailpki, openssl

pytestmark = pytest.mark.integration

PASSWORD = "renewal-test-password-1"
PEOPLE = """login,mail,name,enabled
alice,alice@example.com,Alice Archer,true
bob,bob@example.com,Bob Baker,true
carol,carol@example.com,Carol Cook,true
"""


def ok(result):  # type: ignore[no-untyped-def]
    assert result.code == 0, (result.out, result.err)
    return result


@pytest.fixture
def corp(home: Path, tmp_path: Path) -> Path:
    people = tmp_path / "people.csv"
    people.write_text(PEOPLE)
    ok(mailpki("directory", "import", "--home", home, people))
    for key, value in (("keymanager.key_type", "p256"), ("keymanager.pool_size", "0")):
        ok(mailpki("config", "set", "--home", home, key, value))
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    return home


def enroll(home: Path, tmp_path: Path, email: str, name: str, *extra: str | Path) -> str:
    out = tmp_path / f"{email}.p12"
    result = ok(
        mailpki("enroll", "--home", home, "--email", email, "--name", name, "--out", out,
                "--password-file", tmp_path / "pw", *extra)
    )  # fmt: skip
    return to_hex(int(result.out.split("certificate ")[1].split(",")[0], 16))


def records(home: Path, email: str) -> list[CertificateRecord]:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            return list(
                session.scalars(
                    select(CertificateRecord)
                    .where(CertificateRecord.email == email)
                    .order_by(CertificateRecord.id)
                )
            )
    finally:
        instance.close()


def published(home: Path, email: str) -> set[str]:
    """Serials in the embedded directory's entry of `email`."""
    instance = Instance.open(home)
    try:
        directory = instance.directories.directories()[0]
        entry = directory.find_by_mail(email)
        assert entry is not None
        return {
            f"{x509.load_der_x509_certificate(der).serial_number:X}"
            for der in directory.certificates(entry.dn)
        }
    finally:
        instance.close()


def test_renew_supersedes_publishes_in_place_and_keeps_the_old_one_valid(
    corp: Path, tmp_path: Path
) -> None:
    old = enroll(corp, tmp_path, "alice@example.com", "Alice Archer")
    assert published(corp, "alice@example.com") == {old}

    listed = json.loads(ok(mailpki("certs", "expiring", "--home", corp, "--within", "800",
                                   "--json")).out)  # fmt: skip
    assert [(r["serial"], r["email"], r["renewed_by"]) for r in listed] == [
        (old, "alice@example.com", None)
    ]
    assert set(listed[0]) == {"serial", "email", "profile", "not_after", "renewed_by"}

    out = tmp_path / "alice-new.p12"
    result = ok(mailpki("renew", "--home", corp, "--email", "alice@example.com", "--out", out,
                        "--password-file", tmp_path / "pw"))  # fmt: skip
    new = to_hex(int(result.out.split("certificate ")[1].split(" ")[0], 16))
    assert new != old and f"renews {show_serial(old)}" in result.out

    # The new PKCS#12 opens with the password and holds the new certificate.
    cert = load_pkcs12(out.read_bytes(), PASSWORD.encode()).certificate
    assert f"{cert.serial_number:X}" == new
    assert (out.stat().st_mode & 0o777) == 0o600

    old_row, new_row = records(corp, "alice@example.com")
    assert (old_row.serial, old_row.status, old_row.superseded_by) == (old, "valid", new)
    assert (new_row.serial, new_row.status, new_row.superseded_by) == (new, "valid", None)
    # Escrowed before delivery, and delivered.
    instance = Instance.open(corp)
    try:
        with instance.db.session() as session:
            state = session.scalar(select(EscrowedKey.state).where(EscrowedKey.serial == new))
        assert state == "delivered"
        # The old one is not revoked: OCSP still says good.
        assert instance.ca.status(int(old, 16)).status == "good"  # type: ignore[union-attr]
    finally:
        instance.close()
    assert published(corp, "alice@example.com") == {new}

    # The old certificate still verifies with the real openssl (old signatures stay valid).
    chain = tmp_path / "chain.pem"
    chain.write_text(ok(mailpki("ca", "chain", "--home", corp)).out)
    old_pem = tmp_path / "old.pem"
    old_pem.write_text(ok(mailpki("certs", "show", old, "--pem", "--home", corp)).out)
    openssl("verify", "-purpose", "smimesign", "-CAfile", chain, old_pem)

    # It shows as renewed; 'certs list' calls it superseded.
    listed = json.loads(ok(mailpki("certs", "expiring", "--home", corp, "--within", "800",
                                   "--json")).out)  # fmt: skip
    assert {r["serial"]: r["renewed_by"] for r in listed} == {old: new, new: None}
    text = ok(mailpki("certs", "expiring", "--home", corp, "--within", "800")).out
    assert f"yes ({show_serial(new)})" in text
    assert "superseded" in ok(mailpki("certs", "list", "--home", corp)).out


def test_renew_refusals_change_nothing(corp: Path, tmp_path: Path) -> None:
    serial = enroll(corp, tmp_path, "bob@example.com", "Bob Baker")
    before = [(r.serial, r.status, r.superseded_by) for r in records(corp, "bob@example.com")]
    pw = tmp_path / "pw"
    cases = [
        (("--email", "nobody@example.com", "--out", tmp_path / "n.p12"), "has no certificate"),
        (("--email", "not-a-mail", "--out", tmp_path / "n.p12"), "is not a mail address"),
        (("--expiring-within", "-3", "--out-dir", tmp_path / "d"), "between 0 and 3650"),
        (("--email", "bob@example.com"), "give --out"),
        (("--out", tmp_path / "n.p12"), "give --email"),
        (("--email", "bob@example.com", "--expiring-within", "3", "--out", tmp_path / "x.p12"),
         "give --email MAIL (one person) or --expiring-within"),
        (("--email", "bob@example.com", "--out", tmp_path / "missing" / "b.p12"),
         "does not exist"),
    ]  # fmt: skip
    for args, message in cases:
        result = mailpki("renew", "--home", corp, *args, "--password-file", pw)
        assert result.code != 0, args
        assert message in result.err, (args, result.err)
        assert len(result.err.strip().splitlines()) == 1, result.err
    result = mailpki("certs", "expiring", "--home", corp, "--within", "-3")
    assert result.code != 0 and "between 0 and 3650" in result.err
    after = [(r.serial, r.status, r.superseded_by) for r in records(corp, "bob@example.com")]
    assert after == before

    # Revoked: a clear refusal, nothing issued.
    ok(mailpki("ca", "revoke", serial, "--home", corp, "--reason", "keyCompromise"))
    result = mailpki("renew", "--home", corp, "--email", "bob@example.com", "--out",
                     tmp_path / "b.p12", "--password-file", pw)  # fmt: skip
    assert result.code != 0 and "is revoked" in result.err
    assert not (tmp_path / "b.p12").exists()
    assert len(records(corp, "bob@example.com")) == 1

    # Expired (the clock moved past its not-after): refused.
    instance = Instance.open(corp)
    try:
        carol = enroll(corp, tmp_path, "carol@example.com", "Carol Cook")
        later = datetime.now(UTC) + timedelta(days=800)
        with pytest.raises(RenewalRefused, match="expired on"):
            plan(instance, "carol@example.com", now=later)

        # Already renewed, meanwhile: a renewal that lost the race changes nothing.
        def race(step: str) -> None:
            if step == "key":
                renew_one(instance, "carol@example.com", out=tmp_path / "c1.p12",
                          actor="test", password=PASSWORD.encode(), send_mail=False)  # fmt: skip

        with pytest.raises(RenewalRefused, match="renewed or revoked meanwhile"):
            renew_one(instance, "carol@example.com", out=tmp_path / "c2.p12", actor="test",
                      password=PASSWORD.encode(), send_mail=False, on_step=race)  # fmt: skip
        assert not (tmp_path / "c2.p12").exists()
        rows = records(corp, "carol@example.com")
        assert [(r.serial == carol, r.superseded_by is not None) for r in rows] == [
            (True, True),
            (False, False),
        ]
    finally:
        instance.close()


def _signing_csr(path: Path) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Alice")]))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path, key


def test_dual_key_renews_both_halves(corp: Path, tmp_path: Path) -> None:
    csr, signing_key = _signing_csr(tmp_path / "signing.csr")
    enroll(corp, tmp_path, "alice@example.com", "Alice Archer", "--dual-key",
           "--signing-csr", csr)  # fmt: skip
    before = records(corp, "alice@example.com")
    assert sorted(r.profile for r in before) == [
        "sponsored-strict-encryption",
        "sponsored-strict-signing",
    ]
    out = tmp_path / "renewed.p12"
    ok(mailpki("renew", "--home", corp, "--email", "alice@example.com", "--out", out,
               "--password-file", tmp_path / "pw"))  # fmt: skip
    rows = records(corp, "alice@example.com")
    assert len(rows) == 4
    old = {r.serial: r for r in rows[:2]}
    new = {r.profile: r for r in rows[2:]}
    assert all(r.superseded_by in {n.serial for n in new.values()} for r in old.values())
    assert all(r.superseded_by is None and r.status == "valid" for r in new.values())
    # The signing half certifies the person's own key again (it was never escrowed).
    signing = x509.load_pem_x509_certificate((tmp_path / "renewed-signing.pem").read_bytes())
    assert f"{signing.serial_number:X}" == new["sponsored-strict-signing"].serial
    assert signing.public_key().public_numbers() == signing_key.public_key().public_numbers()
    cert = load_pkcs12(out.read_bytes(), PASSWORD.encode()).certificate
    assert f"{cert.serial_number:X}" == new["sponsored-strict-encryption"].serial
    assert published(corp, "alice@example.com") == {r.serial for r in new.values()}


def test_bulk_renewal_csv_and_progress(corp: Path, tmp_path: Path) -> None:
    first = {
        email: enroll(corp, tmp_path, email, name)
        for email, name in (("alice@example.com", "Alice Archer"), ("bob@example.com", "Bob Baker"))
    }
    out_dir = tmp_path / "renewed"
    result = ok(mailpki("renew", "--home", corp, "--expiring-within", "800", "--out-dir",
                        out_dir, "--workers", "1"))  # fmt: skip
    lines = result.out.strip().splitlines()
    assert lines[0] == "email,serial,file,password"
    rows = {line.split(",")[0]: line.split(",") for line in lines[1:]}
    assert set(rows) == set(first)
    for email, (_, serial, path, password) in rows.items():
        cert = load_pkcs12(Path(path).read_bytes(), password.encode()).certificate
        assert show_serial(cert.serial_number) == serial != show_serial(first[email])
    assert "2 renewed, 0 failed" in result.err
    # Each old certificate is superseded by the one in the CSV.
    for email, serial in first.items():
        old_row = records(corp, email)[0]
        assert (old_row.serial, old_row.superseded_by) == (serial, to_hex(int(rows[email][1], 16)))


def test_portal_offers_renewal_only_within_the_window(corp: Path, tmp_path: Path) -> None:
    import re
    from importlib import resources

    from mailpki.errors import InputError
    from mailpki.instance.portal import Portal
    from mailpki.instance.portal_renewal import offer, renew

    enroll(corp, tmp_path, "alice@example.com", "Alice Archer")  # 730 days: outside 60
    packaged = resources.files("mailpki.policy").joinpath("profiles", "sponsored-multipurpose.toml")
    text = re.sub(r"(?m)^validity_days = \d+$", "validity_days = 20", packaged.read_text("utf-8"))
    (corp / "profiles" / "sponsored-multipurpose.toml").write_text(text)
    short = enroll(corp, tmp_path, "bob@example.com", "Bob Baker")  # 20 days: inside
    instance = Instance.open(corp)
    try:
        portal = Portal(instance)
        alice = {"entry": {"login": "alice", "mail": "alice@example.com"}, "method": "pin"}
        bob = {"entry": {"login": "bob", "mail": "bob@example.com"}, "method": "pin"}
        nobody = {"entry": {"login": "carol", "mail": "carol@example.com"}, "method": "pin"}
        assert offer(portal, alice) is None
        assert offer(portal, nobody) is None
        found = offer(portal, bob)
        assert found is not None and found.serial == short and 18 <= found.days_left <= 20
        with pytest.raises(InputError, match="no certificate that is due"):
            renew(portal, "t" * 43, alice, password=None, confirm=None, legacy=False)
        with pytest.raises(InputError):  # a weak chosen password: refused before anything
            renew(portal, "t" * 43, bob, password="short", confirm="short", legacy=False)
    finally:
        instance.close()
    assert [r.superseded_by for r in records(corp, "bob@example.com")] == [None]


def test_portal_renews_both_halves_of_a_dual_key_pair(corp: Path, tmp_path: Path) -> None:
    """Dual key in the portal: a new escrowed encryption key and a new signing key (made
    centrally, as at a portal enrollment, never escrowed), each its own download; both
    old halves superseded, neither revoked; the new pair published in their place."""
    import re
    import secrets
    from importlib import resources

    from mailpki.instance.portal import Portal
    from mailpki.instance.portal_renewal import offer, renew

    for profile in ("sponsored-strict-encryption", "sponsored-strict-signing"):
        packaged = resources.files("mailpki.policy").joinpath("profiles", f"{profile}.toml")
        text = re.sub(
            r"(?m)^validity_days = \d+$", "validity_days = 20", packaged.read_text("utf-8")
        )
        (corp / "profiles" / f"{profile}.toml").write_text(text)
    csr, _signing_key = _signing_csr(tmp_path / "signing.csr")
    enroll(corp, tmp_path, "alice@example.com", "Alice Archer", "--dual-key",
           "--signing-csr", csr)  # fmt: skip
    old = {r.profile: r for r in records(corp, "alice@example.com")}
    token = secrets.token_urlsafe(32)
    instance = Instance.open(corp)
    try:
        portal = Portal(instance)
        alice = {"entry": {"login": "alice", "mail": "alice@example.com"}, "method": "pin"}
        found = offer(portal, alice)
        assert found is not None and found.dual_key
        assert found.serial == show_serial(old["sponsored-strict-encryption"].serial)
        outcome = renew(portal, token, alice, password=PASSWORD, confirm=PASSWORD, legacy=False)
        files = {link.filename: link for link in outcome.downloads}
        assert sorted(files) == [
            "alice@example.com-encryption-renewed.p12",
            "alice@example.com-signing-renewed.p12",
        ]
        opened = {
            name: load_pkcs12(portal.downloads.take(link.handle, token).data, PASSWORD.encode())
            for name, link in files.items()
        }
        portal.after_enrollment()  # what the web route runs after its response
    finally:
        instance.close()
    rows = records(corp, "alice@example.com")
    assert len(rows) == 4
    new = {r.profile: r for r in rows if r.serial not in {o.serial for o in old.values()}}
    assert set(new) == {"sponsored-strict-encryption", "sponsored-strict-signing"}
    now = {r.serial: r for r in rows}
    for profile, row in old.items():
        fresh = now[row.serial]
        assert fresh.status == "valid" and fresh.superseded_by == new[profile].serial
    encryption = opened["alice@example.com-encryption-renewed.p12"]
    signing = opened["alice@example.com-signing-renewed.p12"]
    assert f"{encryption.certificate.serial_number:X}" == new["sponsored-strict-encryption"].serial
    assert f"{signing.certificate.serial_number:X}" == new["sponsored-strict-signing"].serial
    old_signing = x509.load_der_x509_certificate(old["sponsored-strict-signing"].der)
    assert signing.certificate.public_key() != old_signing.public_key()  # a new signing key
    assert outcome.serial == new["sponsored-strict-encryption"].serial
    assert published(corp, "alice@example.com") == {r.serial for r in new.values()}
    # Only the encryption key is escrowed.
    instance = Instance.open(corp)
    try:
        escrowed = {k.serial for k in instance.key_manager.escrowed(email="alice@example.com")}
    finally:
        instance.close()
    assert new["sponsored-strict-encryption"].serial in escrowed
    assert new["sponsored-strict-signing"].serial not in escrowed
    # The signing certificate really is for signing, the encryption one for encryption.
    for path, loaded in (("enc.pem", encryption), ("sig.pem", signing)):
        (tmp_path / path).write_bytes(loaded.certificate.public_bytes(serialization.Encoding.PEM))
    text = openssl("x509", "-in", tmp_path / "sig.pem", "-noout", "-ext", "keyUsage").stdout
    assert "Digital Signature" in text and "Key Encipherment" not in text
