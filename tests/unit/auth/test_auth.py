"""Logon: lockout, directory passwords (with fakes), and one-time HR PINs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from mailpki.auth import Identity
from mailpki.auth.directory_logon import MAX_PASSWORD, DirectoryAuthenticator
from mailpki.auth.limiter import LoginLimiter, limiter_keys, lockout_message
from mailpki.auth.pins import (
    ARGON2_MEMORY_KIB,
    ARGON2_TIME_COST,
    WRONG_PIN,
    PinAuthenticator,
    import_pins,
    pin_hasher,
)
from mailpki.directory.entry import DirectoryEntry
from mailpki.errors import AuthenticationError, ConfigError, DirectoryError, InputError
from mailpki.store.db import Database
from mailpki.store.models import AuthFailure, HRPin

WRONG_LOGIN = "wrong login or password"
START = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class CountingHasher(PasswordHasher):
    """Cheap parameters for speed; counts calls so tests can see a verify happened."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verifies = 0
        self.hashes = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        self.verifies += 1
        return super().verify(hash, password)

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashes += 1
        return super().hash(password, salt=salt)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'mailpki.db'}")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(db: Database, clock: Clock) -> LoginLimiter:
    return LoginLimiter(db, max_failures=3, lockout=timedelta(minutes=15), clock=clock)


def failure_rows(db: Database) -> list[AuthFailure]:
    with db.session() as session:
        return list(session.scalars(select(AuthFailure)))


# -- limiter --------------------------------------------------------------------------------


def test_lockout_after_max_failures_and_expiry(limiter: LoginLimiter, clock: Clock) -> None:
    limiter.check("alice")
    assert limiter.failed("alice") is None
    assert limiter.failed("alice") is None
    until = limiter.failed("alice")
    assert until == START + timedelta(minutes=15)
    with pytest.raises(
        AuthenticationError, match=r"^too many failed logons: try again after 09:15 UTC$"
    ):
        limiter.check("alice")
    limiter.check("bob")  # other keys are not affected
    clock.advance(minutes=14, seconds=59)
    with pytest.raises(AuthenticationError):
        limiter.check("alice")
    clock.advance(seconds=1)
    limiter.check("alice")
    # The lock is over and so is the window: counting starts again.
    assert limiter.failed("alice") is None
    assert limiter.failed("alice") is None
    assert limiter.failed("alice") is not None


def test_failures_outside_the_window_are_forgotten(limiter: LoginLimiter, clock: Clock) -> None:
    limiter.failed("carol")
    limiter.failed("carol")
    clock.advance(minutes=16)
    limiter.failed("carol")
    limiter.failed("carol")
    limiter.check("carol")  # 2 in the current window, not 4


def test_failures_while_locked_do_not_extend_the_lock(limiter: LoginLimiter, clock: Clock) -> None:
    for _ in range(3):
        limiter.failed("dave")
    clock.advance(minutes=10)
    assert limiter.failed("dave") == START + timedelta(minutes=15)


def test_success_clears_the_failures(limiter: LoginLimiter) -> None:
    limiter.failed("erin")
    limiter.failed("erin")
    limiter.succeeded("erin")
    limiter.failed("erin")
    limiter.failed("erin")
    limiter.check("erin")


def test_keys_are_stored_hashed(db: Database, limiter: LoginLimiter) -> None:
    limiter.failed("MyPassword123-typed-as-login")
    rows = failure_rows(db)
    assert len(rows) == 1 and "MyPassword" not in rows[0].key and len(rows[0].key) == 64


def test_limiter_keys() -> None:
    assert limiter_keys(" Alice ") == ("alice",)
    assert limiter_keys("Alice", "10.0.0.1") == ("alice", "alice\x1f10.0.0.1")


def test_lockout_message_rounds_up_to_the_minute() -> None:
    assert lockout_message(datetime(2026, 1, 1, 9, 15, tzinfo=UTC)).endswith("after 09:15 UTC")
    assert lockout_message(datetime(2026, 1, 1, 9, 15, 1, tzinfo=UTC)).endswith("after 09:16 UTC")
    assert lockout_message(datetime(2026, 1, 1, 23, 59, 30, tzinfo=UTC)).endswith("00:00 UTC")


@pytest.mark.parametrize(
    ("max_failures", "lockout"),
    [(0, timedelta(minutes=1)), (3, timedelta(0)), (True, timedelta(1))],
)
def test_limiter_refuses_bad_settings(db: Database, max_failures: int, lockout: timedelta) -> None:
    with pytest.raises(ConfigError):
        LoginLimiter(db, max_failures=max_failures, lockout=lockout)


# -- directory logon --------------------------------------------------------------------------


@dataclass
class FakeDirectory:
    entries: dict[str, DirectoryEntry]
    passwords: dict[str, str]
    outage: bool = False
    finds: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)

    def find(self, login: str) -> DirectoryEntry | None:
        self.finds.append(login)
        if self.outage:
            raise DirectoryError("ldap.example.com:636 timed out")
        return self.entries.get(login.strip().lower())

    def verify(self, entry: DirectoryEntry, password: str) -> bool:
        self.binds.append(entry.login)
        if self.outage:
            raise DirectoryError("ldap.example.com:636 timed out")
        return self.passwords.get(entry.login) == password


def person(login: str, *, enabled: bool = True, directory: str = "corp") -> DirectoryEntry:
    return DirectoryEntry(
        directory=directory,
        dn=f"uid={login},ou=people,dc=example,dc=com",
        login=login,
        mail=f"{login}@example.com",
        display_name=login.title(),
        enabled=enabled,
    )


@pytest.fixture
def fake() -> FakeDirectory:
    return FakeDirectory(
        entries={"alice": person("alice"), "gone": person("gone", enabled=False)},
        passwords={"alice": "correct horse", "gone": "still right"},
    )


@pytest.fixture
def logon(fake: FakeDirectory, limiter: LoginLimiter) -> DirectoryAuthenticator:
    return DirectoryAuthenticator(fake.find, fake.verify, limiter)


def test_directory_logon_succeeds(fake: FakeDirectory, logon: DirectoryAuthenticator) -> None:
    identity = logon.authenticate("alice", "correct horse", source="10.0.0.1")
    assert identity == Identity(entry=fake.entries["alice"], method="directory")


@pytest.mark.parametrize("password", ["", "x" * (MAX_PASSWORD + 1)])
def test_empty_and_huge_passwords_are_refused_before_any_lookup(
    fake: FakeDirectory, logon: DirectoryAuthenticator, password: str
) -> None:
    for _ in range(3):
        with pytest.raises(AuthenticationError, match=f"^{WRONG_LOGIN}$"):
            logon.authenticate("alice", password)
    assert fake.finds == [] and fake.binds == []
    # ... and still counted: the fourth try is a lockout even with the right password.
    with pytest.raises(AuthenticationError, match="too many failed logons"):
        logon.authenticate("alice", "correct horse")


def test_a_1024_character_password_reaches_the_directory(
    fake: FakeDirectory, logon: DirectoryAuthenticator
) -> None:
    with pytest.raises(AuthenticationError, match=WRONG_LOGIN):
        logon.authenticate("alice", "x" * MAX_PASSWORD)
    assert fake.binds == ["alice"]


def test_unknown_user_and_wrong_password_look_the_same(logon: DirectoryAuthenticator) -> None:
    messages = []
    for login, password in (("nobody", "whatever"), ("alice", "wrong")):
        with pytest.raises(AuthenticationError) as info:
            logon.authenticate(login, password)
        messages.append(str(info.value))
    assert messages == [WRONG_LOGIN, WRONG_LOGIN]


def test_disabled_account_is_said_only_after_the_password(logon: DirectoryAuthenticator) -> None:
    with pytest.raises(AuthenticationError, match=f"^{WRONG_LOGIN}$"):
        logon.authenticate("gone", "wrong")
    with pytest.raises(AuthenticationError, match="^the account is disabled$"):
        logon.authenticate("gone", "still right")


def test_an_outage_propagates_and_is_not_counted(
    db: Database, fake: FakeDirectory, logon: DirectoryAuthenticator
) -> None:
    fake.outage = True
    for _ in range(5):
        with pytest.raises(DirectoryError):
            logon.authenticate("alice", "correct horse")
    assert failure_rows(db) == []
    fake.outage = False
    assert logon.authenticate("alice", "correct horse").entry.login == "alice"


def test_lockout_stops_lookups_and_success_clears(
    fake: FakeDirectory, logon: DirectoryAuthenticator, clock: Clock
) -> None:
    logon.authenticate("alice", "correct horse")
    for _ in range(2):
        with pytest.raises(AuthenticationError, match=WRONG_LOGIN):
            logon.authenticate("alice", "wrong")
    logon.authenticate("alice", "correct horse")  # clears the two failures
    for _ in range(3):
        with pytest.raises(AuthenticationError, match=WRONG_LOGIN):
            logon.authenticate("ALICE", "wrong")
    fake.finds.clear()
    with pytest.raises(AuthenticationError, match="try again after 09:15 UTC"):
        logon.authenticate("alice", "correct horse")
    assert fake.finds == []
    clock.advance(minutes=15)
    assert logon.authenticate("alice", "correct horse").method == "directory"


def test_a_lock_on_the_login_holds_from_every_source(logon: DirectoryAuthenticator) -> None:
    for _ in range(3):
        with pytest.raises(AuthenticationError, match=WRONG_LOGIN):
            logon.authenticate("alice", "wrong", source="198.51.100.7")
    with pytest.raises(AuthenticationError, match="too many failed logons"):
        logon.authenticate("alice", "correct horse", source="192.0.2.1")


def test_a_lock_on_login_and_source_holds_alone(
    db: Database, fake: FakeDirectory, clock: Clock
) -> None:
    # Clearing only the login key shows that the login+source key locks on its own.
    login_limiter = LoginLimiter(db, max_failures=3, lockout=timedelta(minutes=15), clock=clock)
    logon = DirectoryAuthenticator(fake.find, fake.verify, login_limiter)
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            logon.authenticate("alice", "wrong", source="198.51.100.7")
    login_limiter.succeeded("alice")  # e.g. an admin unlock of the login only
    with pytest.raises(AuthenticationError):
        logon.authenticate("alice", "wrong", source="198.51.100.7")
    with pytest.raises(AuthenticationError, match="too many failed logons"):
        logon.authenticate("alice", "correct horse", source="198.51.100.7")
    assert logon.authenticate("alice", "correct horse", source="192.0.2.1").entry.login == "alice"


def test_huge_logins_are_refused_without_lookup(
    fake: FakeDirectory, logon: DirectoryAuthenticator
) -> None:
    for login in ("", "  ", "a" * 257):
        with pytest.raises(AuthenticationError, match=WRONG_LOGIN):
            logon.authenticate(login, "correct horse")
    assert fake.finds == []


# -- HR PINs ---------------------------------------------------------------------------------

PIN_UMA = "Xq7-pin-8841"
PIN_VIC = "Zr9-pin-5523"
PIN_CSV = (
    "employee_id,mail,name,pin\n"
    f"E100,uma@example.com,Uma Ulm,{PIN_UMA}\n"
    f"E200,Vic@Example.com,Vic Vogt,  {PIN_VIC}  \n"
)
VALIDITY = timedelta(days=14)


@dataclass
class Pins:
    db: Database
    clock: Clock
    hasher: CountingHasher
    auth: PinAuthenticator
    directory: dict[str, DirectoryEntry]
    lookups: list[str]


@pytest.fixture
def pins(db: Database, clock: Clock) -> Pins:
    hasher = CountingHasher()
    report = import_pins(db, PIN_CSV.encode(), validity=VALIDITY, clock=clock, hasher=hasher)
    assert (report.added, report.replaced, report.errors) == (2, 0, [])
    # A generous limiter: the PIN's own attempt limit is what these tests exercise.
    limiter = LoginLimiter(db, max_failures=100, lockout=timedelta(minutes=15), clock=clock)
    directory: dict[str, DirectoryEntry] = {}
    lookups: list[str] = []

    def lookup(mail: str) -> DirectoryEntry | None:
        lookups.append(mail)
        return directory.get(mail.lower())

    auth = PinAuthenticator(
        db, limiter, max_attempts=3, lookup_mail=lookup, clock=clock, hasher=hasher
    )
    hasher.verifies = 0
    return Pins(db, clock, hasher, auth, directory, lookups)


def pin_rows(db: Database) -> dict[str, HRPin]:
    with db.session() as session:
        return {row.employee_id: row for row in session.scalars(select(HRPin))}


def database_bytes(db: Database, tmp_path: Path) -> bytes:
    db.dispose()  # close connections (checkpoints the WAL); the -wal file is read too
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("mailpki.db*")))


def test_import_stores_only_argon2_hashes(pins: Pins, tmp_path: Path) -> None:
    rows = pin_rows(pins.db)
    assert set(rows) == {"E100", "E200"}
    for row in rows.values():
        assert row.pin_hash.startswith("$argon2id$")
        assert PIN_UMA not in row.pin_hash and PIN_VIC not in row.pin_hash
        assert (row.attempts, row.used_at) == (0, None)
    assert rows["E200"].mail == "Vic@Example.com"
    expires = rows["E100"].expires_at.replace(tzinfo=UTC)
    assert expires == START + VALIDITY
    raw = database_bytes(pins.db, tmp_path)
    for pin in (PIN_UMA, PIN_VIC):
        assert pin.encode() not in raw
        assert pin.encode("utf-16-le") not in raw


def test_default_hasher_parameters(db: Database, tmp_path: Path) -> None:
    assert pin_hasher().time_cost == ARGON2_TIME_COST
    report = import_pins(db, PIN_CSV.encode(), validity=VALIDITY)
    assert report.added == 2
    row = pin_rows(db)["E100"]
    assert row.pin_hash.startswith(
        f"$argon2id$v=19$m={ARGON2_MEMORY_KIB},t={ARGON2_TIME_COST},p=1$"
    )
    assert PIN_UMA.encode() not in database_bytes(db, tmp_path)


def test_pin_logon_by_employee_id_is_one_time(pins: Pins) -> None:
    identity = pins.auth.authenticate("E100", PIN_UMA, source="10.0.0.1")
    assert identity.method == "pin"
    entry = identity.entry
    assert (entry.directory, entry.dn, entry.login, entry.mail, entry.display_name) == (
        "hr",
        "employeeNumber=E100,ou=hr",
        "E100",
        "uma@example.com",
        "Uma Ulm",
    )
    assert entry.enabled and entry.employee_id == "E100"
    assert pin_rows(pins.db)["E100"].used_at is not None
    with pytest.raises(AuthenticationError, match="^this PIN was already used$"):
        pins.auth.authenticate("E100", PIN_UMA)


def test_pin_logon_by_mail_uses_the_directory_entry(pins: Pins) -> None:
    pins.directory["vic@example.com"] = person("vic", directory="embedded")
    identity = pins.auth.authenticate("VIC@example.com", PIN_VIC)  # stripped on import
    assert identity.entry == pins.directory["vic@example.com"]
    assert pins.lookups == ["Vic@Example.com"]


def test_wrong_pins_void_the_pin_at_max_attempts(pins: Pins) -> None:
    for attempt in range(1, 4):
        with pytest.raises(AuthenticationError, match=f"^{WRONG_PIN}$"):
            pins.auth.authenticate("E100", "000000")
        assert pin_rows(pins.db)["E100"].attempts == attempt
    with pytest.raises(AuthenticationError, match="void after too many wrong attempts"):
        pins.auth.authenticate("E100", PIN_UMA)
    with pytest.raises(AuthenticationError, match=f"^{WRONG_PIN}$"):
        pins.auth.authenticate("E100", "000000")  # a guesser learns nothing
    assert pin_rows(pins.db)["E100"].attempts == 3
    assert pin_rows(pins.db)["E100"].used_at is None
    # The other employee is unaffected.
    assert pins.auth.authenticate("E200", PIN_VIC).entry.login == "E200"


def test_an_expired_pin_is_refused(pins: Pins) -> None:
    pins.clock.advance(days=14)
    with pytest.raises(AuthenticationError, match="^this PIN has expired: ask HR for a new one$"):
        pins.auth.authenticate("E100", PIN_UMA)
    with pytest.raises(AuthenticationError, match=f"^{WRONG_PIN}$"):
        pins.auth.authenticate("E100", "123456")


def test_reimport_replaces_the_pin_and_resets_it(pins: Pins) -> None:
    pins.auth.authenticate("E100", PIN_UMA)
    with pytest.raises(AuthenticationError):
        pins.auth.authenticate("E200", "999999")
    pins.clock.advance(days=20)  # both would have expired
    new = "New-pin-3321"
    report = import_pins(
        pins.db,
        f"employee_id,mail,name,pin\nE100,uma@example.com,Uma Ulm,{new}\n"
        f"E200,vic@example.com,Vic Vogt,{PIN_VIC}\n".encode(),
        validity=VALIDITY,
        clock=pins.clock,
        hasher=pins.hasher,
    )
    assert (report.added, report.replaced, report.errors) == (0, 2, [])
    rows = pin_rows(pins.db)
    assert (rows["E100"].used_at, rows["E100"].attempts, rows["E200"].attempts) == (None, 0, 0)
    with pytest.raises(AuthenticationError, match=WRONG_PIN):
        pins.auth.authenticate("E100", PIN_UMA)
    assert pins.auth.authenticate("E100", new).entry.mail == "uma@example.com"
    assert pins.auth.authenticate("E200", PIN_VIC).entry.mail == "vic@example.com"


def test_unknown_id_gives_the_same_answer_after_a_verify(pins: Pins) -> None:
    answers = []
    for ident in ("E999", "E100", "nobody@example.com"):
        before = pins.hasher.verifies
        with pytest.raises(AuthenticationError) as info:
            pins.auth.authenticate(ident, "654321")
        answers.append(str(info.value))
        assert pins.hasher.verifies == before + 1, ident  # one argon2 verify either way
    assert answers == [WRONG_PIN] * 3


@pytest.mark.parametrize(
    ("ident", "pin"), [("E100", ""), ("E100", "12345"), ("E100", "x" * 65), ("", PIN_UMA)]
)
def test_malformed_input_is_refused_without_a_lookup(pins: Pins, ident: str, pin: str) -> None:
    with pytest.raises(AuthenticationError, match=f"^{WRONG_PIN}$"):
        pins.auth.authenticate(ident, pin)
    assert pins.hasher.verifies == 0
    assert pin_rows(pins.db)["E100"].attempts == 0


def test_pin_logon_is_locked_out_by_the_limiter(db: Database, clock: Clock) -> None:
    hasher = CountingHasher()
    import_pins(db, PIN_CSV.encode(), validity=VALIDITY, clock=clock, hasher=hasher)
    limiter = LoginLimiter(db, max_failures=2, lockout=timedelta(minutes=5), clock=clock)
    auth = PinAuthenticator(
        db, limiter, max_attempts=5, lookup_mail=lambda _m: None, clock=clock, hasher=hasher
    )
    for _ in range(2):
        with pytest.raises(AuthenticationError, match=WRONG_PIN):
            auth.authenticate("E100", "000000")
    with pytest.raises(AuthenticationError, match="log on with it after 09:05 UTC"):
        auth.authenticate("E100", PIN_UMA)
    clock.advance(minutes=5)
    assert auth.authenticate("E100", PIN_UMA).method == "pin"


def test_the_pin_lockout_says_the_pin_is_void_and_who_gives_a_new_one(
    db: Database, clock: Clock
) -> None:
    """With the defaults (5 failures lock, 5 wrong tries void the PIN) the lock ends but the
    PIN stays void: the lockout says so, and the same for an id nobody has."""
    hasher = CountingHasher()
    import_pins(db, PIN_CSV.encode(), validity=VALIDITY, clock=clock, hasher=hasher)
    limiter = LoginLimiter(db, max_failures=5, lockout=timedelta(minutes=15), clock=clock)
    auth = PinAuthenticator(
        db, limiter, max_attempts=5, lookup_mail=lambda _m: None, clock=clock, hasher=hasher
    )
    answers = []
    for ident in ("E100", "E999"):
        for _ in range(5):
            with pytest.raises(AuthenticationError, match=f"^{WRONG_PIN}$"):
                auth.authenticate(ident, "000000")
        with pytest.raises(AuthenticationError) as info:
            auth.authenticate(ident, PIN_UMA)
        answers.append(str(info.value))
    assert answers[0] == answers[1]
    assert "void after 5 wrong tries" in answers[0] and "ask HR" in answers[0]
    assert answers[0].endswith("after 09:15 UTC")
    clock.advance(minutes=15)
    with pytest.raises(AuthenticationError, match="void after too many wrong attempts"):
        auth.authenticate("E100", PIN_UMA)


def test_a_disabled_directory_entry_does_not_spend_the_pin(pins: Pins) -> None:
    pins.directory["uma@example.com"] = person("uma", enabled=False)
    with pytest.raises(AuthenticationError, match="^the account is disabled$"):
        pins.auth.authenticate("E100", PIN_UMA)
    assert pin_rows(pins.db)["E100"].used_at is None


def test_a_directory_outage_does_not_spend_the_pin(pins: Pins) -> None:
    def down(_mail: str) -> DirectoryEntry | None:
        raise DirectoryError("ldap down")

    auth = PinAuthenticator(
        pins.db,
        LoginLimiter(pins.db, max_failures=100, lockout=timedelta(minutes=1), clock=pins.clock),
        max_attempts=3,
        lookup_mail=down,
        clock=pins.clock,
        hasher=pins.hasher,
    )
    with pytest.raises(DirectoryError):
        auth.authenticate("E100", PIN_UMA)
    assert pins.auth.authenticate("E100", PIN_UMA).method == "pin"


def test_pin_authenticator_refuses_bad_settings(db: Database, limiter: LoginLimiter) -> None:
    with pytest.raises(ConfigError):
        PinAuthenticator(db, limiter, max_attempts=0, lookup_mail=lambda _m: None)


# -- PIN import errors ----------------------------------------------------------------------


def test_pin_import_row_errors_never_show_the_pin(db: Database, clock: Clock) -> None:
    secret_short, secret_long = "98765", "L" * 65
    text = (
        "employee_id,mail,name,pin\n"  # 1
        f"E1,one@example.com,One,{secret_short}\n"  # 2: too short
        f"E2,two@example.com,Two,{secret_long}\n"  # 3: too long
        "E3,three@example.com,Three,Pin\x07Bell1\n"  # 4: control character
        "E4,not-a-mail,Four,Good-pin-4444\n"  # 5
        "E 5,five@example.com,Five,Good-pin-5555\n"  # 6: space in the id
        "E6,six@example.com,,Good-pin-6666\n"  # 7: no name
        "E7,seven@example.com,Seven,Good-pin-7777\n"  # 8: good
        "E7,other@example.com,Seven Again,Good-pin-7778\n"  # 9: duplicate id
        "E8,SEVEN@example.com,Eight,Good-pin-8888\n"  # 10: duplicate mail
        "E9,nine@example.com,Nine\n"  # 11: a field is missing
    )
    report = import_pins(db, text.encode(), validity=VALIDITY, clock=clock, hasher=CountingHasher())
    assert (report.added, report.replaced) == (1, 0)
    assert [e.split(":")[0] for e in report.errors] == [f"line {n}" for n in range(2, 12) if n != 8]
    joined = "\n".join(report.errors)
    for secret in (secret_short, secret_long, "Bell1", "Good-pin"):
        assert secret not in joined
    assert "the PIN must be 6 to 64 characters" in report.errors[0]
    assert "longer than 64" in report.errors[1]


def test_pin_import_refuses_a_mail_of_another_employee(db: Database, clock: Clock) -> None:
    hasher = CountingHasher()
    import_pins(db, PIN_CSV.encode(), validity=VALIDITY, clock=clock, hasher=hasher)
    report = import_pins(
        db,
        b"employee_id,mail,name,pin\nE300,UMA@example.com,Someone,Other-pin-1\n",
        validity=VALIDITY,
        clock=clock,
        hasher=hasher,
    )
    assert report.added == 0
    assert report.errors == ["line 2: mail 'UMA@example.com' already belongs to employee id 'E100'"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"employee_id,mail,name\nE1,a@example.com,A\n",
        b"employee_id,mail,name,pin,extra\n",
        b"employee_id,mail,name,pin\nE1,a@example.com,A,\xffpin123\n",
        b"x" * (50 * 1024 * 1024 + 1),
    ],
)
def test_pin_import_file_problems_raise_and_change_nothing(pins: Pins, data: bytes) -> None:
    before = {k: (r.pin_hash, r.attempts) for k, r in pin_rows(pins.db).items()}
    with pytest.raises(InputError) as info:
        import_pins(pins.db, data, validity=VALIDITY, clock=pins.clock, hasher=pins.hasher)
    assert b"pin123" not in str(info.value).encode()
    assert {k: (r.pin_hash, r.attempts) for k, r in pin_rows(pins.db).items()} == before


def test_pin_import_refuses_a_non_positive_validity(db: Database) -> None:
    with pytest.raises(InputError):
        import_pins(db, PIN_CSV.encode(), validity=timedelta(0))


def test_pin_import_hashes_in_parallel(db: Database, clock: Clock) -> None:
    hasher = CountingHasher()
    rows = "".join(f"E{i},p{i}@example.com,P {i},Pin-{i:06d}\n" for i in range(40))
    report = import_pins(
        db, ("employee_id,mail,name,pin\n" + rows).encode(), validity=VALIDITY, clock=clock,
        hasher=hasher, workers=4,
    )  # fmt: skip
    assert (report.added, report.errors, hasher.hashes) == (40, [], 40)
    hashes = {row.pin_hash for row in pin_rows(db).values()}
    assert len(hashes) == 40  # salted: equal-looking PINs never share a hash
