"""The console's CSV of logins: a line number for each bad row, the rest kept; a file
that cannot be read at all is refused whole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailpki.errors import InputError
from mailpki.instance.console_invites import MAX_ROWS, read_logins_csv
from mailpki.instance.console_overview import HIDDEN, _shown


def test_bad_rows_are_reported_by_line_and_the_rest_kept() -> None:
    data = (
        "name,login\n"
        "Ann,ann\n"
        "\n"  # blank lines are skipped
        "Nobody,\n"
        "Ann again,ann\n"
        "Ctl,bad\x01login\n"
        f"Long,{'x' * 300}\n"
        '"Quoted, name",bob\n'
    ).encode()
    logins, problems = read_logins_csv(data)
    assert logins == {"ann": 2, "bob": 8}
    assert problems == [
        "line 4: no login",
        "line 5: ann is already on line 2",
        "line 6: the login has control characters",
        "line 7: the login is longer than 256 characters",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"mail\nann@example.com\n", "'login' column"),
        (b"", "'login' column"),
        (b"login\n\xff\xfe\n", "not UTF-8"),
        (b"login\nann\x00\n", "not a CSV"),
        (b"login\n" + b"a\n" * (MAX_ROWS + 1), "more than"),
    ],
)
def test_unreadable_files_are_refused_whole(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_logins_csv(data)


def test_a_byte_order_mark_and_crlf_are_fine() -> None:
    assert read_logins_csv(b"\xef\xbb\xbflogin\r\nann\r\n")[0] == {"ann": 2}


@given(st.binary(max_size=400))
def test_any_bytes_give_logins_problems_or_one_input_error(data: bytes) -> None:
    try:
        logins, problems = read_logins_csv(b"login\n" + data)
    except InputError:
        return
    assert all(0 < len(login) <= 256 for login in logins)
    assert all(p.startswith("line ") for p in problems)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("smtp.password_file", "secrets/smtp", "secrets/smtp"),
        ("oidc.client_secret", "s3cret", HIDDEN),
        ("database.url", "postgresql+psycopg://pki:pw@db:5432/pki",
         f"postgresql+psycopg://pki:{HIDDEN}@db:5432/pki"),
        ("web.base_url", "https://pki.example.com", "https://pki.example.com"),
    ],
)  # fmt: skip
def test_settings_page_never_shows_a_secret(key: str, value: str, shown: str) -> None:
    assert _shown(key, value) == shown
