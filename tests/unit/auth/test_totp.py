"""TOTP (RFC 6238): the RFC's own test vectors, drift, and codes that must not pass."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailpki.auth.totp import (
    DIGITS,
    STEP_SECONDS,
    hotp,
    matching_step,
    new_secret,
    provisioning_uri,
    secret_base32,
    step_at,
    totp_code,
)

RFC_SECRET = b"12345678901234567890"  # RFC 6238 Appendix B, SHA-1 seed

# RFC 6238 Appendix B, the SHA-1 rows (8 digits).
RFC_6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]

# RFC 4226 Appendix D: HOTP values for counters 0-9 of the same secret (6 digits).
RFC_4226 = [
    "755224", "287082", "359152", "969429", "338314",
    "254676", "287922", "162583", "399871", "520489",
]  # fmt: skip


@pytest.mark.parametrize(("unix_time", "expected"), RFC_6238_SHA1)
def test_rfc_6238_appendix_b_sha1_vectors(unix_time: int, expected: str) -> None:
    assert totp_code(RFC_SECRET, unix_time, digits=8) == expected


@pytest.mark.parametrize(("unix_time", "expected"), RFC_6238_SHA1)
def test_six_digit_codes_are_the_last_six_of_the_rfc_values(unix_time: int, expected: str) -> None:
    assert totp_code(RFC_SECRET, unix_time) == expected[-6:]
    assert matching_step(RFC_SECRET, expected[-6:], unix_time) == unix_time // 30


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC_4226)))
def test_rfc_4226_hotp_vectors(counter: int, expected: str) -> None:
    assert hotp(RFC_SECRET, counter) == expected


def test_one_step_of_drift_either_way_is_accepted_two_are_not() -> None:
    now = 1_700_000_000.0
    step = step_at(now)
    for delta in (-1, 0, 1):
        code = hotp(RFC_SECRET, step + delta)
        assert matching_step(RFC_SECRET, code, now) == step + delta
    for delta in (-2, 2, 10):
        code = hotp(RFC_SECRET, step + delta)
        if code not in {hotp(RFC_SECRET, step + d) for d in (-1, 0, 1)}:
            assert matching_step(RFC_SECRET, code, now) is None


def test_a_code_spaced_as_apps_show_it_is_accepted() -> None:
    code = totp_code(RFC_SECRET, 59)
    assert matching_step(RFC_SECRET, f"{code[:3]} {code[3:]}", 59) == 1


@pytest.mark.parametrize(
    "code",
    [
        "",
        "12345",  # too short
        "1234567",  # too long
        "12345a",  # not digits
        "-12345",
        "+12345",
        "١٢٣٤٥٦",  # Arabic-Indic digits: isdigit() but not ASCII
        "１２３４５６",  # full-width digits
        "123\x00456",
        "9" * 100_000,  # huge
        "\n287082",
    ],
)
def test_malformed_codes_never_match(code: str) -> None:
    assert matching_step(RFC_SECRET, code, 59) is None


@given(st.text(max_size=40))
def test_any_text_either_matches_as_six_ascii_digits_or_not_at_all(text: str) -> None:
    step = matching_step(RFC_SECRET, text, 1_234_567_890)
    if step is not None:
        cleaned = text.replace(" ", "")
        assert len(cleaned) == DIGITS and cleaned.isascii() and cleaned.isdigit()


def test_new_secrets_are_160_bits_and_differ() -> None:
    a, b = new_secret(), new_secret()
    assert len(a) == 20 and a != b


def test_provisioning_uri_carries_the_secret_and_the_parameters() -> None:
    secret = new_secret()
    uri = provisioning_uri(secret, "jane.doe", issuer="mailpki")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert parts.path == "/mailpki:jane.doe"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "secret": secret_base32(secret),
        "issuer": "mailpki",
        "algorithm": "SHA1",
        "digits": "6",
        "period": str(STEP_SECONDS),
    }
    padded = query["secret"] + "=" * (-len(query["secret"]) % 8)
    assert base64.b32decode(padded) == secret
