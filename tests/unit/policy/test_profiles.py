"""Profile loading: shipped profiles are valid, overrides win, bad files name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailpki.errors import ProfileError
from mailpki.policy.profile import (
    DEFAULT_PROFILE,
    LINT_TYPES,
    list_profiles,
    load_profile,
    smime_policy_oid,
)

SHIPPED = {
    "sponsored-multipurpose",
    "sponsored-strict-signing",
    "sponsored-strict-encryption",
    "mailbox-strict",
    "enterprise-private",
}

GOOD = """\
description = "Test profile (CA/B Forum S/MIME BR)"
lint_type = "MAILBOX-STRICT"
policy_oids = ["2.23.140.1.5.1.3"]
key_role = "dual-use"
key_usage_rsa = ["digitalSignature", "keyEncipherment"]
key_usage_ec = ["digitalSignature", "keyAgreement"]
validity_days = 365
rsa_sizes = [2048]
curves = ["secp256r1"]
subject = "mailbox"
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / f"{name}.toml").write_text(text, encoding="utf-8")
    return tmp_path


def test_shipped_profiles() -> None:
    profiles = {p.name: p for p in list_profiles()}
    assert set(profiles) >= SHIPPED
    assert DEFAULT_PROFILE in profiles
    for p in profiles.values():
        assert p.validity_days <= 825
        assert p.lint_type is None or p.lint_type in LINT_TYPES
        if p.lint_type is not None:
            assert smime_policy_oid(p.lint_type) in p.policy_oids


def test_default_profile_signs_and_encrypts() -> None:
    p = load_profile(DEFAULT_PROFILE)
    assert p.lint_type == "SPONSORED-MULTIPURPOSE"
    assert p.policy_oids == ("2.23.140.1.5.3.2",)
    assert p.key_usage_rsa == {"digitalSignature", "keyEncipherment"}
    assert p.key_usage_ec == {"digitalSignature", "keyAgreement"}
    assert p.encrypts and p.key_role == "dual-use"


def test_dual_key_halves() -> None:
    signing = load_profile("sponsored-strict-signing")
    encryption = load_profile("sponsored-strict-encryption")
    assert signing.key_role == "signing" and not signing.encrypts
    assert encryption.key_role == "encryption" and encryption.encrypts
    assert "keyEncipherment" not in signing.key_usage_rsa
    assert "digitalSignature" not in encryption.key_usage_rsa | encryption.key_usage_ec


def test_enterprise_private_is_rfc5280_only() -> None:
    p = load_profile("enterprise-private")
    assert p.lint_type is None
    assert "RFC 5280" in p.description
    assert not any(o.startswith("2.23.140.1.5") for o in p.policy_oids)
    assert p.subject == "directory-dn"


def test_override_dir_wins(tmp_path: Path) -> None:
    text = GOOD.replace("MAILBOX-STRICT", "SPONSORED-MULTIPURPOSE")
    text = text.replace("2.23.140.1.5.1.3", "2.23.140.1.5.3.2").replace('"mailbox"', '"sponsored"')
    _write(tmp_path, "sponsored-multipurpose", text)
    assert load_profile("sponsored-multipurpose", tmp_path).validity_days == 365
    assert load_profile("sponsored-multipurpose").validity_days != 365
    listed = {p.name: p for p in list_profiles(tmp_path)}
    assert listed["sponsored-multipurpose"].validity_days == 365
    assert str(tmp_path) in listed["sponsored-multipurpose"].source


def test_override_dir_adds_new_profile(tmp_path: Path) -> None:
    _write(tmp_path, "short-lived", GOOD)
    assert load_profile("short-lived", tmp_path).name == "short-lived"
    assert "short-lived" in {p.name for p in list_profiles(tmp_path)}
    assert "mailbox-strict" in {p.name for p in list_profiles(tmp_path)}


def test_missing_override_dir(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(DEFAULT_PROFILE, tmp_path / "nope")


def test_unknown_profile_lists_known() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("no-such-profile")
    message = str(info.value)
    assert "unknown profile 'no-such-profile'" in message
    for name in SHIPPED:
        assert name in message


@pytest.mark.parametrize("name", ["../etc/passwd", "Sponsored", "", "a/b", "x" * 80])
def test_invalid_profile_names(name: str) -> None:
    with pytest.raises(ProfileError, match="invalid"):
        load_profile(name)


@pytest.mark.parametrize(
    ("old", "new", "field", "why"),
    [
        ('subject = "mailbox"', 'subject = "mailbox"\ncolour = "red"', "colour", "unknown field"),
        ("validity_days = 365", "validity_days = 900", "validity_days", "outside 1..825"),
        ("validity_days = 365", 'validity_days = "365"', "validity_days", "integer"),
        ("validity_days = 365", "validity_days = true", "validity_days", "integer"),
        ("validity_days = 365\n", "", "validity_days", "required"),
        ('"keyEncipherment"]', '"keyCertSign"]', "key_usage_rsa", "'keyCertSign' is not allowed"),
        ('"keyAgreement"]', '"keyEncipherment"]', "key_usage_ec", "not allowed"),
        ('"keyAgreement"]', '"digitalsignature"]', "key_usage_ec", "not allowed"),
        ('["2.23.140.1.5.1.3"]', '["2.23.140.1.5.1.3", "1.2.x"]', "policy_oids", "dotted OID"),
        ('["2.23.140.1.5.1.3"]', '["2.23.140.1.5.1.3", "1.45.1"]', "policy_oids", "dotted"),
        ('["2.23.140.1.5.1.3"]', '["2.23.140.1.5.3.2"]', "policy_oids", "2.23.140.1.5.1.3"),
        ('["2.23.140.1.5.1.3"]', "[]", "policy_oids", "exactly one BR OID"),
        ('"MAILBOX-STRICT"', '"MAILBOX-LEGACY"', "lint_type", "is not one of"),
        ('"MAILBOX-STRICT"', '"SPONSORED-STRICT"', "policy_oids", "2.23.140.1.5.3.3"),
        ('"secp256r1"]', '"secp256k1"]', "curves", "secp256k1"),
        ("rsa_sizes = [2048]", "rsa_sizes = [1024]", "rsa_sizes", "1024"),
        ("rsa_sizes = [2048]", "rsa_sizes = [2052]", "rsa_sizes", "multiple of 8"),
        ('subject = "mailbox"', 'subject = "sponsored"', "subject", "'mailbox'"),
        ('subject = "mailbox"', 'subject = "uid"', "subject", "is not one of"),
        ('key_role = "dual-use"', 'key_role = "signing"', "key_usage_rsa", "signing-only"),
        ('key_role = "dual-use"', 'key_role = "both"', "key_role", "is not one of"),
        (
            '["digitalSignature", "keyEncipherment"]',
            '["keyEncipherment"]',
            "key_usage_rsa",
            "dual-use",
        ),
        (
            'description = "Test profile (CA/B Forum S/MIME BR)"',
            'description = ""',
            "description",
            "non-empty",
        ),
    ],
)
def test_bad_profile_names_file_and_field(
    tmp_path: Path, old: str, new: str, field: str, why: str
) -> None:
    assert old in GOOD
    _write(tmp_path, "broken", GOOD.replace(old, new, 1))
    with pytest.raises(ProfileError) as info:
        load_profile("broken", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "broken.toml") in message
    assert f"field {field!r}" in message
    assert why in message


def test_rfc5280_profile_must_say_so(tmp_path: Path) -> None:
    text = GOOD.replace('"MAILBOX-STRICT"', '"none"').replace('["2.23.140.1.5.1.3"]', "[]")
    _write(tmp_path, "private", text)
    with pytest.raises(ProfileError, match=r"'description'.*RFC 5280"):
        load_profile("private", tmp_path)
    _write(tmp_path, "private", text.replace("Test profile", "Test profile, RFC 5280 only"))
    assert load_profile("private", tmp_path).lint_type is None


def test_rfc5280_profile_cannot_claim_br_oid(tmp_path: Path) -> None:
    text = GOOD.replace('"MAILBOX-STRICT"', '"none"').replace("Test profile", "RFC 5280 only")
    _write(tmp_path, "private", text)
    with pytest.raises(ProfileError, match=r"'policy_oids'.*cannot claim"):
        load_profile("private", tmp_path)


def test_invalid_toml(tmp_path: Path) -> None:
    _write(tmp_path, "broken", "description = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile("broken", tmp_path)


def test_bad_file_breaks_list_profiles(tmp_path: Path) -> None:
    _write(tmp_path, "broken", GOOD.replace("365", "9000"))
    with pytest.raises(ProfileError, match=r"broken\.toml"):
        list_profiles(tmp_path)
