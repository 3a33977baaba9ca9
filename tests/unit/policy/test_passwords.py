"""check_password: the PKCS#12 password a person chooses in the portal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpki.errors import InputError
from mailpki.policy.passwords import MAX_PASSWORD, check_password

AVOID = ("alice", "alice", "Alice", "Example")


def check(password: str, confirm: str | None = None, *, min_length: int = 12) -> bytes:
    return check_password(
        password, password if confirm is None else confirm, min_length=min_length, avoid=AVOID
    )


def refused(password: str, confirm: str | None = None, *, min_length: int = 12) -> str:
    with pytest.raises(InputError) as caught:
        check(password, confirm, min_length=min_length)
    return str(caught.value)


def test_a_good_password_is_returned_as_utf8() -> None:
    assert check("Tr0ub4dor&3xyz") == b"Tr0ub4dor&3xyz"
    assert check("Grün-Äpfel-2024") == "Grün-Äpfel-2024".encode()


def test_mismatch() -> None:
    assert "differ" in refused("Tr0ub4dor&3xyz", "Tr0ub4dor&3xyZ")
    assert "differ" in refused("Tr0ub4dor&3xyz", "")


def test_too_short() -> None:
    assert "at least 12" in refused("Ab1!cdE2")
    assert "at least 16" in refused("Tr0ub4dor&3xyz", min_length=16)


def test_too_few_classes() -> None:
    assert "three of" in refused("abcdefghijkl")  # lower only
    assert "three of" in refused("abcdefgh1234")  # two classes
    assert "three of" in refused("ABCDEFGHIJKL")


def test_a_long_passphrase_with_few_classes_is_accepted() -> None:
    assert check("correct horse battery staple") == b"correct horse battery staple"
    assert check("orbit canyon velvet mango") == b"orbit canyon velvet mango"


def test_a_very_long_passphrase_is_accepted() -> None:
    phrase = "orbit canyon velvet mango stapler quiet harbor pencil tundra rocket lemon cobalt"
    assert check(phrase) == phrase.encode()


def test_repeated_characters() -> None:
    assert "repeats" in refused("Aa1!Aa1!Aa1!")
    assert "repeats" in refused("aaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    assert "repeats" in refused("Ab1!" * 10)


@pytest.mark.parametrize(
    "password",
    [
        "Password1234!",
        "PASSWORD!2024",
        "Qwerty123456!",
        "Welcome2024!!",
        "Summer-2024-!",
        "Letmein!2345",
    ],
)
def test_common_passwords(password: str) -> None:
    assert "every attacker's list" in refused(password)


def test_leetspeak_of_a_common_password_is_refused() -> None:
    assert "every attacker's list" in refused("P@ssw0rd1234")


@pytest.mark.parametrize(
    "password", ["Alice-Rocks-2024", "xxALICExx!2024", "Example!Corp42", "my-alice@2024Q"]
)
def test_containing_login_or_name(password: str) -> None:
    assert "your name" in refused(password)


def test_short_name_parts_are_not_forbidden() -> None:
    result = check_password(
        "Al-Tr0ub4dor&3", "Al-Tr0ub4dor&3", min_length=12, avoid=("Al", "Bo", "")
    )
    assert result == b"Al-Tr0ub4dor&3"


@pytest.mark.parametrize("ch", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f"])
def test_control_characters(ch: str) -> None:
    assert "control" in refused(f"Tr0ub4dor&3{ch}xyz")


def test_over_long() -> None:
    assert "longer than" in refused("Ab1!" + "x" * MAX_PASSWORD)
    # Over-long is refused before anything else is looked at, mismatch first.
    assert "differ" in refused("A" * 100_000, "B")


def test_a_lone_surrogate_is_an_input_error() -> None:
    with pytest.raises(InputError):
        check("Tr0ub4dor&3\ud800xyz")


_ANY_TEXT = st.text(
    alphabet=st.characters(codec="utf-8"), max_size=300
)  # no lone surrogates (tested on their own above)


@settings(max_examples=300, deadline=None)
@given(
    password=st.one_of(
        _ANY_TEXT,
        st.text(alphabet=st.sampled_from("aA1!xY9-é \x00"), min_size=8, max_size=40),
    ),
    same=st.booleans(),
    confirm=_ANY_TEXT,
    min_length=st.integers(min_value=8, max_value=128),
    avoid=st.lists(st.text(max_size=12), max_size=4),
)
def test_fuzz_only_input_errors_and_bytes(
    password: str, same: bool, confirm: str, min_length: int, avoid: list[str]
) -> None:
    other = password if same else confirm
    try:
        result = check_password(password, other, min_length=min_length, avoid=tuple(avoid))
    except InputError as exc:
        assert str(exc)
        return
    assert isinstance(result, bytes)
    assert result.decode("utf-8") == password == other
    assert min_length <= len(password) <= MAX_PASSWORD
    assert not any(w.lower() in password.lower() for w in avoid if len(w) >= 3)
