from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailpki.ca.serials import new_serial, parse_serial, to_hex
from mailpki.errors import InputError


def test_new_serials_print_the_same_padded_or_not() -> None:
    from mailpki.ca.serials import show_serial

    for _ in range(2000):
        serial = new_serial()
        assert serial.bit_length() == 127
        assert to_hex(serial) == show_serial(serial)


def test_new_serials_are_large_positive_and_distinct() -> None:
    serials = {new_serial() for _ in range(2000)}
    assert len(serials) == 2000
    assert all(1 << 64 <= s < 1 << 127 for s in serials)


@given(st.integers(min_value=1, max_value=(1 << 159) - 1))
def test_hex_round_trip(serial: int) -> None:
    text = to_hex(serial)
    assert text == text.upper() and not text.startswith("0")
    assert parse_serial(text) == serial
    assert parse_serial(text.lower()) == serial
    assert parse_serial("0x" + text) == serial


def test_pasted_forms() -> None:
    assert parse_serial("0a:1b:2c") == 0x0A1B2C
    assert parse_serial(" 0A 1B 2C ") == 0x0A1B2C


@pytest.mark.parametrize("bad", ["", "  ", "xyz", "12g4", "-5", "0", "00", "1" * 43, "0x", "1.5"])
def test_bad_serials(bad: str) -> None:
    with pytest.raises(InputError):
        parse_serial(bad)


@given(st.text(max_size=60))
def test_any_text_is_a_serial_or_an_input_error(text: str) -> None:
    with contextlib.suppress(InputError):
        assert parse_serial(text) > 0
