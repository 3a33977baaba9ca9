"""The embedded directory: lookups, literal search, strict CSV/LDIF import, publishing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

import mailpki.directory.people_import as import_module
from mailpki.directory.embedded import EmbeddedDirectory
from mailpki.directory.people_import import import_people
from mailpki.directory.validation import MAX_IMPORT_BYTES, check_mail, embedded_dn
from mailpki.errors import DirectoryError, InputError
from mailpki.store.db import Database
from mailpki.store.models import EmbeddedCertificate, EmbeddedEntry

PEOPLE = (
    "login,mail,name,given_name,surname,organisation,site,groups,employee_id,enabled\n"
    "alice,Alice@Example.com,Alice Archer,Alice,Archer,Corp,Paris,staff;admins,E1,true\n"
    "bob,bob@example.com,Bob Baker,Bob,Baker,Corp,Lyon,staff,E2,false\n"
    "a_b,ab@example.com,Under Score,,,,,,,\n"
    "axb,axb@example.com,Ax B,,,,,,,\n"
    "pct,pct@example.com,50% Off,,,,,,,\n"
    "fifty,fifty@example.com,50 Cent,,,,,,,\n"
    "bs,bs@example.com,Back\\slash,,,,,,,\n"
)


def _database(path: Path) -> Database:
    db = Database(f"sqlite:///{path / 'mailpki.db'}")
    db.migrate()
    return db


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = _database(tmp_path)
    yield database
    database.dispose()


@pytest.fixture
def directory(db: Database) -> EmbeddedDirectory:
    report = import_people(db, PEOPLE.encode(), kind="csv")
    assert report.errors == [] and report.added == 7
    return EmbeddedDirectory(db, domains=("Example.com",))


def snapshot(db: Database) -> list[tuple[Any, ...]]:
    with db.session() as session:
        entries = session.execute(select(EmbeddedEntry).order_by(EmbeddedEntry.id)).scalars()
        rows: list[tuple[Any, ...]] = [
            tuple(getattr(e, c.key) for c in EmbeddedEntry.__table__.columns) for e in entries
        ]
        certs = session.execute(
            select(EmbeddedCertificate.entry_id, EmbeddedCertificate.fingerprint)
        ).all()
        return rows + [tuple(c) for c in certs]


def csv_import(db: Database, text: str) -> Any:
    return import_people(db, text.encode(), kind="csv")


def ldif_import(db: Database, text: str) -> Any:
    return import_people(db, text.encode(), kind="ldif")


# -- lookups --------------------------------------------------------------------------------


def test_find_by_login_is_case_insensitive_and_maps_every_field(
    directory: EmbeddedDirectory,
) -> None:
    entry = directory.find_by_login("  ALICE ")
    assert entry is not None
    assert entry.directory == "embedded" and directory.name == "embedded"
    assert entry.dn == "uid=alice,ou=people,o=embedded"
    assert (entry.login, entry.mail, entry.display_name) == (
        "alice",
        "Alice@Example.com",
        "Alice Archer",
    )
    assert (entry.given_name, entry.surname, entry.organisation, entry.site) == (
        "Alice",
        "Archer",
        "Corp",
        "Paris",
    )
    assert entry.groups == ("staff", "admins")
    assert entry.employee_id == "E1" and entry.enabled
    bob = directory.find_by_login("bob")
    assert bob is not None and not bob.enabled
    assert directory.domains == ("example.com",)


def test_find_by_login_with_a_mail_looks_up_by_mail(directory: EmbeddedDirectory) -> None:
    entry = directory.find_by_login("alice@example.COM")
    assert entry is not None and entry.login == "alice"


def test_find_by_mail_exact_and_case_insensitive(directory: EmbeddedDirectory) -> None:
    for mail in ("Alice@Example.com", "alice@example.com", " ALICE@EXAMPLE.COM "):
        entry = directory.find_by_mail(mail)
        assert entry is not None and entry.login == "alice"


@pytest.mark.parametrize(
    "login", ["nobody", "", "   ", "x" * 300, "alice\x00", "a*", "alice)(uid=*", "nobody@x.org"]
)
def test_unknown_or_impossible_logins_are_none(directory: EmbeddedDirectory, login: str) -> None:
    assert directory.find_by_login(login) is None


@pytest.mark.parametrize("mail", ["", "alice", "nobody@example.com", "alice@example.com\x00"])
def test_unknown_mail_is_none(directory: EmbeddedDirectory, mail: str) -> None:
    assert directory.find_by_mail(mail) is None


def test_verify_password_always_refuses(directory: EmbeddedDirectory) -> None:
    entry = directory.find_by_login("alice")
    assert entry is not None
    assert directory.verify_password(entry, "anything") is False
    assert directory.verify_password(entry, "") is False


def test_dn_escapes_the_login() -> None:
    assert embedded_dn("a,b+c") == "uid=a\\,b\\+c,ou=people,o=embedded"


def test_an_unreachable_database_is_a_directory_error(tmp_path: Path) -> None:
    broken = EmbeddedDirectory(Database(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))
    with pytest.raises(DirectoryError):
        broken.find_by_login("alice")
    with pytest.raises(DirectoryError):
        broken.publish("uid=alice,ou=people,o=embedded", b"\x30\x00")


# -- search ---------------------------------------------------------------------------------


def logins(entries: list[Any]) -> list[str]:
    return [e.login for e in entries]


def test_search_by_prefix_of_each_field_sorted_by_display_name(
    directory: EmbeddedDirectory,
) -> None:
    assert logins(directory.search("ali")) == ["alice"]  # login / given name / display
    assert logins(directory.search("arch")) == ["alice"]  # surname
    assert logins(directory.search("BOB@")) == ["bob"]  # mail
    assert logins(directory.search("ba")) == ["bs", "bob"]  # "Back\slash", surname Baker
    assert logins(directory.search("50")) == ["fifty", "pct"]  # "50 Cent" < "50% Off"
    assert logins(directory.search("a", limit=2)) == ["alice", "axb"]
    assert directory.search("zzz") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("%", []),
        ("_", []),
        ("*", []),
        (")(uid=*", []),
        ("*)(|(uid=*", []),
        ("\x00", []),
        ("alice\x00", []),
        ("a_", ["a_b"]),  # not "axb": "_" is literal
        ("50%", ["pct"]),  # not "50 Cent": "%" is literal
        ("back\\", ["bs"]),  # the escape character itself is literal
        ("\\", []),
        ("'; drop table directory_entries; --", []),
    ],
)
def test_search_matches_only_literally(
    directory: EmbeddedDirectory, text: str, expected: list[str]
) -> None:
    assert logins(directory.search(text)) == expected


@pytest.mark.parametrize("text", ["", "   ", "x" * 101])
def test_search_refuses_empty_and_long_text(directory: EmbeddedDirectory, text: str) -> None:
    with pytest.raises(InputError):
        directory.search(text)


def test_search_refuses_a_bad_limit(directory: EmbeddedDirectory) -> None:
    with pytest.raises(InputError):
        directory.search("a", limit=0)


def test_search_accepts_100_characters(directory: EmbeddedDirectory) -> None:
    assert directory.search("a" * 100) == []


# -- CSV import -----------------------------------------------------------------------------


def test_csv_columns_in_any_order_and_case(db: Database) -> None:
    report = csv_import(db, "NAME, Mail ,Login\nCarol C,carol@example.com,Carol\n")
    assert (report.added, report.updated, report.errors) == (1, 0, [])
    entry = EmbeddedDirectory(db).find_by_login("carol")
    assert entry is not None and entry.display_name == "Carol C" and entry.enabled
    assert entry.groups == () and entry.site is None


def test_csv_bad_records_are_reported_with_line_numbers_and_others_imported(
    db: Database,
) -> None:
    text = (
        "login,mail,name\n"  # 1
        "good1,good1@example.com,Good One\n"  # 2
        "bad mail,x@example.com,Bad Login\n"  # 3
        '"quoted","multi@example.com","Two\nLines"\n'  # 4-5: a newline in a name
        "\n"  # 6: blank lines are skipped
        "good2,good2@example.com,Good Two\n"  # 7
        "short,short@example.com\n"  # 8: a field is missing
        "badmail,not-a-mail,Bad Mail\n"  # 9
        "good3,good3@example.com,Good Three\n"  # 10
    )
    report = csv_import(db, text)
    assert report.added == 3
    assert [e.split(":")[0] for e in report.errors] == ["line 3", "line 4", "line 8", "line 9"]
    assert "control characters" in report.errors[1]
    assert "expected 3 fields, found 2" in report.errors[2]
    directory = EmbeddedDirectory(db)
    assert {e.login for e in directory.search("good")} == {"good1", "good2", "good3"}
    assert directory.find_by_login("quoted") is None


@pytest.mark.parametrize(
    "mail",
    [
        "a@example.com\r\nBcc: x@evil.org",
        "a@example.com,b@example.com",
        "Alice <a@example.com>",
        "<a@example.com>",
        "a b@example.com",
        '"a b"@example.com',
        "a@example",
        "a@@example.com",
        "a@-example.com",
        "a..b@example.com",
        ".a@example.com",
        "a@example.com (comment)",
        "x" * 65 + "@example.com",
        "a@" + "b" * 64 + ".com",
        "@example.com",
        "a@",
    ],
)
def test_mail_must_be_a_plain_addr_spec(mail: str) -> None:
    with pytest.raises(InputError):
        check_mail(mail)


@pytest.mark.parametrize("mail", ["a@example.com", "a.b+tag@sub.example.co.uk", "jörg@bücher.de"])
def test_plain_mail_addresses_are_accepted(mail: str) -> None:
    assert check_mail(mail) == mail


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ('x,"a@example.com\r\nBcc: y@evil.org",Name', "mail"),
        ('x,"a@example.com, b@example.com",Name', "mail"),
        ("x,Name <a@example.com>,Name", "mail"),
        ("x,a@example.com," + "n" * 257, "longer than 256"),
        ("x,a@example.com,Bad\x07Bell", "control"),
        ("x,a@example.com,Evil\u202etxt.exe", "control"),
        ("x,a@example.com,   ", "name is empty"),
        ("x@y,a@example.com,Name", "login"),
        (",a@example.com,Name", "login is empty"),
        ("-x,a@example.com,Name", "login"),
        ("x" * 129 + ",a@example.com,Name", "login is longer"),
    ],
)
def test_csv_field_validation(db: Database, row: str, why: str) -> None:
    report = csv_import(db, f"login,mail,name\n{row}\n")
    assert report.added == 0
    assert len(report.errors) == 1 and report.errors[0].startswith("line 2: ")
    assert why in report.errors[0]
    assert snapshot(db) == []


@pytest.mark.parametrize(
    ("header", "row", "why"),
    [
        ("login,mail,name,enabled", "x,x@example.com,X,maybe", "enabled"),
        ("login,mail,name,given_name", "x,x@example.com,X," + "g" * 129, "longer than 128"),
        ("login,mail,name,employee_id", "x,x@example.com,X," + "1" * 65, "longer than 64"),
        ("login,mail,name,groups", "x,x@example.com,X,ok;bad\x01group", "control"),
    ],
)
def test_csv_optional_field_validation(db: Database, header: str, row: str, why: str) -> None:
    report = csv_import(db, f"{header}\n{row}\n")
    assert report.added == 0 and why in report.errors[0]


def test_duplicates_within_the_file_reject_the_later_record(db: Database) -> None:
    text = (
        "login,mail,name\n"
        "dora,dora@example.com,Dora\n"
        "DORA,other@example.com,Dora Again\n"
        "eve,DORA@example.com,Eve\n"
        "fred,fred@example.com,Fred\n"
    )
    report = csv_import(db, text)
    assert report.added == 2
    assert report.errors[0].startswith("line 3: login 'dora' is already on line 2")
    assert report.errors[1].startswith("line 4: mail 'dora@example.com' is already on line 2")
    entry = EmbeddedDirectory(db).find_by_login("dora")
    assert entry is not None and entry.display_name == "Dora"


def test_existing_logins_are_updated_and_missing_columns_kept(db: Database) -> None:
    csv_import(db, "login,mail,name,site,enabled\ngina,gina@example.com,Gina,Rome,false\n")
    report = csv_import(
        db,
        "login,mail,name\n"
        "GINA,gina.new@example.com,Gina G\n"  # updated: no site/enabled columns: kept
        "hank,hank@example.com,Hank\n",
    )
    assert (report.added, report.updated, report.errors) == (1, 1, [])
    directory = EmbeddedDirectory(db)
    entry = directory.find_by_login("gina")
    assert entry is not None
    assert (entry.mail, entry.display_name, entry.site, entry.enabled) == (
        "gina.new@example.com",
        "Gina G",
        "Rome",
        False,
    )
    assert directory.find_by_mail("gina@example.com") is None
    # The same file again changes nothing, and says so.
    again = csv_import(
        db, "login,mail,name\ngina,gina.new@example.com,Gina G\nhank,hank@example.com,Hank\n"
    )
    assert (again.added, again.updated, again.errors) == (0, 0, [])
    # An empty "enabled" keeps the state; a present empty column clears the value.
    csv_import(db, "login,mail,name,site,enabled\ngina,gina.new@example.com,Gina G,,\n")
    entry = directory.find_by_login("gina")
    assert entry is not None and entry.site is None and entry.enabled is False


def test_a_mail_of_another_login_is_refused(db: Database) -> None:
    csv_import(db, "login,mail,name\nivy,ivy@example.com,Ivy\n")
    report = csv_import(db, "login,mail,name\njack,IVY@example.com,Jack\n")
    assert report.added == 0
    assert report.errors == ["line 2: mail 'ivy@example.com' already belongs to 'ivy'"]
    # Moving a mail in one file works when the old owner lets go of it first.
    report = csv_import(
        db,
        "login,mail,name\nivy,ivy.new@example.com,Ivy\njack,ivy@example.com,Jack\n",
    )
    assert (report.added, report.updated, report.errors) == (1, 1, [])


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"login,mail\nx,x@example.com\n", "lacks the column(s) name"),
        (b"login,mail,name,password\n", "unknown column"),
        (b"login,mail,name,mail\n", "twice"),
        (b'login,mail,name\nx,"x@example.com,X\n', "not valid CSV"),
        (b"login,mail,name\nok,ok@example.com,Ok\nbad,\xff@example.com,X\n", "line 3"),
        (b"login,mail,name\n\xc3\x28\n", "not UTF-8"),
    ],
)
def test_file_level_problems_raise_and_change_nothing(db: Database, data: bytes, why: str) -> None:
    csv_import(db, "login,mail,name\nkeep,keep@example.com,Keep\n")
    before = snapshot(db)
    with pytest.raises(InputError) as info:
        import_people(db, data, kind="csv")
    assert why in str(info.value)
    assert snapshot(db) == before


def test_oversized_files_are_refused_before_parsing(db: Database) -> None:
    data = b"login,mail,name\n" + b"x" * MAX_IMPORT_BYTES
    with pytest.raises(InputError, match="larger than 50 MB"):
        import_people(db, data, kind="csv")
    with pytest.raises(InputError, match="larger than 50 MB"):
        import_people(db, data, kind="ldif")


def test_unknown_kind_is_refused(db: Database) -> None:
    with pytest.raises(InputError):
        import_people(db, b"login,mail,name\n", kind="xml")  # type: ignore[arg-type]


def test_a_utf8_bom_and_crlf_are_accepted(db: Database) -> None:
    data = "\ufefflogin,mail,name\r\nkim,kim@example.com,Kim Ünal\r\n".encode()
    report = import_people(db, data, kind="csv")
    assert (report.added, report.errors) == (1, [])
    entry = EmbeddedDirectory(db).find_by_login("kim")
    assert entry is not None and entry.display_name == "Kim Ünal"


def test_a_crash_during_the_import_leaves_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_import(db, "login,mail,name\nlia,lia@example.com,Lia\n")
    before = snapshot(db)

    def crash(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("power cut")

    # The update of lia is executed first, then the inserts crash: all must roll back.
    monkeypatch.setattr(import_module, "insert", crash)
    with pytest.raises(RuntimeError):
        csv_import(db, "login,mail,name\nlia,lia@example.com,Lia Changed\nmo,mo@example.com,Mo\n")
    assert snapshot(db) == before


def test_many_records_in_batches(db: Database) -> None:
    rows = "".join(f"user{i},user{i}@example.com,User {i}\n" for i in range(1200))
    report = csv_import(db, "login,mail,name\n" + rows)
    assert (report.added, report.errors) == (1200, [])
    rows = "".join(f"user{i},user{i}@example.com,User {i} B\n" for i in range(1200))
    report = csv_import(db, "login,mail,name\n" + rows)
    assert (report.added, report.updated) == (0, 1200)


def test_the_error_list_is_capped(db: Database) -> None:
    rows = "".join(f"bad{i},not-a-mail,X\n" for i in range(1100))
    report = csv_import(db, "login,mail,name\n" + rows)
    assert len(report.errors) == 1001 and "more errors" in report.errors[-1]


# -- LDIF import ----------------------------------------------------------------------------

LDIF = """\
version: 1

# the container is not a person: skipped silently
dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: uid=nina,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: nina
mail: nina@example.com
cn: Nina Nagel
cn: Nini
displayName:: {display}
givenName: Nina
sn: Na
 gel
o: Corp
ou: Berlin
ou: Second
memberOf: cn=staff,dc=example,dc=com
memberOf: cn=pki,dc=example,dc=com
employeeNumber: 4711
userPassword: {{SSHA}}c2VjcmV0
jpegPhoto:: /9j/4AAQ
cn;lang-de: Nina N
# a comment
 continued comment

dn:: {dn64}
changetype: add
objectClass: person
uid: otto
mail: otto@example.com
cn: Otto
""".format(
    display=base64.b64encode("Nína Nägel".encode()).decode(),
    dn64=base64.b64encode(b"uid=otto,ou=people,dc=example,dc=com").decode(),
)


def test_ldif_good_file(db: Database) -> None:
    report = ldif_import(db, LDIF)
    assert (report.added, report.updated, report.errors) == (2, 0, [])
    directory = EmbeddedDirectory(db)
    nina = directory.find_by_login("nina")
    assert nina is not None
    assert nina.display_name == "Nína Nägel"  # base64 value
    assert nina.surname == "Nagel"  # continuation line
    assert (nina.given_name, nina.organisation, nina.site, nina.employee_id) == (
        "Nina",
        "Corp",
        "Berlin",
        "4711",
    )
    assert nina.groups == ("cn=staff,dc=example,dc=com", "cn=pki,dc=example,dc=com")
    assert nina.dn == "uid=nina,ou=people,o=embedded"
    otto = directory.find_by_login("otto")
    assert otto is not None and otto.display_name == "Otto"  # cn when no displayName
    # userPassword and other unmapped attributes are never stored.
    assert not any("c2VjcmV0" in str(v) for row in snapshot(db) for v in row)


def test_ldif_with_crlf_and_without_trailing_newline(db: Database) -> None:
    text = "dn: uid=pia,dc=x\r\nuid: pia\r\nmail: pia@example.com\r\ncn: Pia"
    report = ldif_import(db, text)
    assert (report.added, report.errors) == (1, [])


def test_ldif_update_is_a_full_snapshot_but_keeps_enabled(db: Database) -> None:
    csv_import(db, "login,mail,name,site,enabled\nquin,quin@example.com,Quin,Oslo,false\n")
    report = ldif_import(db, "dn: uid=quin,dc=x\nuid: quin\nmail: quin@example.com\ncn: Quin Q\n")
    assert (report.added, report.updated, report.errors) == (0, 1, [])
    entry = EmbeddedDirectory(db).find_by_login("quin")
    assert entry is not None
    assert (entry.display_name, entry.site, entry.enabled) == ("Quin Q", None, False)


BAD_LDIF = """\
dn: uid=good1,dc=x
uid: good1
mail: good1@example.com
cn: Good One

dn: uid=twomail,dc=x
uid: twomail
mail: a@example.com
mail: b@example.com
cn: Two Mails

dn: uid=url,dc=x
uid: url
mail: url@example.com
cn:< file:///etc/passwd

dn: uid=b64,dc=x
uid: b64
mail: b64@example.com
cn:: not*base64

dn: uid=latin1,dc=x
uid: latin1
mail: latin1@example.com
cn:: {latin1}

objectClass: person
uid: nodn

dn: uid=modify,dc=x
changetype: modify
replace: mail

dn: cn=nouid,dc=x
objectClass: inetOrgPerson
cn: No Uid
mail: nouid@example.com

dn: uid=nomail,dc=x
uid: nomail
cn: No Mail

dn: uid=garbage,dc=x
this line has no colon

dn: uid=good2,dc=x
uid: good2
mail: good2@example.com
cn: Good Two
""".format(latin1=base64.b64encode("Zoë".encode("latin-1")).decode())


def test_ldif_bad_records_are_reported_with_line_numbers(db: Database) -> None:
    report = ldif_import(db, BAD_LDIF)
    assert report.added == 2
    assert report.errors == [
        "line 6: mail has several values",
        "line 15: cn: values by URL (':<') are not accepted",
        "line 20: cn: the base64 value is invalid",
        "line 25: cn: the value is not UTF-8 text",
        "line 27: a record must start with 'dn:'",
        "line 31: only content or 'changetype: add' records",
        "line 34: the entry has no uid",
        "line 39: the entry has no mail",
        "line 44: expected 'attribute: value'",
    ]
    assert {e.login for e in EmbeddedDirectory(db).search("good")} == {"good1", "good2"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (" starts with a continuation\ndn: uid=x\n", "line 1: a continuation line"),
        ("version: 2\n\ndn: uid=x\n", "line 1: only LDIF version 1"),
        ("dn: uid=x\ndn: uid=y\n", "line 2: a second 'dn:'"),
        ("dn: uid=x\ncontrol: 1.2.3 true\n", "line 2: LDIF controls"),
        ("dn: uid=x\nuid: a\nuid: b\nmail: a@example.com\ncn: A\n", "line 1: uid has several"),
        ("dn: uid=x\nuid: x\nmail: x@example.com\n", "line 1: the entry has neither"),
        ("dn: uid=x\nuid: bad login\nmail: x@example.com\ncn: X\n", "line 1: login"),
    ],
)
def test_ldif_record_errors(db: Database, text: str, why: str) -> None:
    report = ldif_import(db, text)
    assert report.added == 0
    assert len(report.errors) == 1 and report.errors[0].startswith(why), report.errors


def test_ldif_long_values_are_refused_quickly(db: Database) -> None:
    good = "dn: uid=tia,dc=x\nuid: tia\nmail: tia@example.com\ncn: Tia\n"
    folded = "dn: uid=x,dc=x\njpegPhoto:: AAAA\n" + " AAAA\n" * 400_000  # 1.6 MB, unfolded
    long_line = "dn: uid=y,dc=x\ncn: " + "y" * (1024 * 1024 + 1) + "\n"
    small = "dn: uid=z,dc=x\nuid: z\nmail: z@example.com\ncn: Z\n" + " z\n" * 100_000
    report = ldif_import(db, "\n".join([good, folded, long_line, small]))
    assert report.added == 1
    assert report.errors[0].startswith("line 7: a value longer than")
    assert report.errors[1].startswith("line 400010: a value longer than")
    assert report.errors[2].startswith("line 400012: the name is longer than 256")


def test_ldif_version_line_directly_above_the_first_record(db: Database) -> None:
    report = ldif_import(
        db, "version: 1\ndn: uid=ray,dc=x\nuid: ray\nmail: ray@example.com\ncn: R\n"
    )
    assert (report.added, report.errors) == (1, [])


def test_ldif_non_utf8_file_is_refused(db: Database) -> None:
    with pytest.raises(InputError, match=r"not UTF-8 text \(line 2\)"):
        import_people(db, b"dn: uid=x\ncn: Zo\xeb\n", kind="ldif")


def test_ldif_duplicates_reject_the_later_record(db: Database) -> None:
    text = (
        "dn: uid=sam,dc=x\nuid: sam\nmail: sam@example.com\ncn: Sam\n\n"
        "dn: uid=sam2,dc=x\nuid: SAM\nmail: sam2@example.com\ncn: Sam Two\n"
    )
    report = ldif_import(db, text)
    assert report.added == 1 and report.errors == ["line 6: login 'sam' is already on line 1"]


# -- publishing -----------------------------------------------------------------------------


def test_publish_and_unpublish_are_idempotent(directory: EmbeddedDirectory) -> None:
    dn = embedded_dn("alice")
    cert1, cert2 = b"\x30\x03\x02\x01\x01", b"\x30\x03\x02\x01\x02"
    assert directory.certificates(dn) == []
    assert directory.publish(dn, cert1) is True
    assert directory.publish(dn, cert1) is True
    assert directory.publish(dn, cert2) is True
    assert directory.certificates(dn) == [cert1, cert2]
    assert directory.unpublish(dn, cert1) is True
    assert directory.unpublish(dn, cert1) is True
    assert directory.certificates(dn) == [cert2]
    assert directory.certificates(embedded_dn("bob")) == []


def test_publish_to_an_unknown_dn_is_false(directory: EmbeddedDirectory) -> None:
    assert directory.publish("uid=nobody,ou=people,o=embedded", b"\x30\x00") is False
    assert directory.unpublish("uid=nobody,ou=people,o=embedded", b"\x30\x00") is False
    assert directory.certificates("uid=nobody,ou=people,o=embedded") == []


def test_publish_refuses_empty_der(directory: EmbeddedDirectory) -> None:
    with pytest.raises(InputError):
        directory.publish(embedded_dn("alice"), b"")


def test_published_certificates_survive_a_reimport(
    db: Database, directory: EmbeddedDirectory
) -> None:
    dn = embedded_dn("alice")
    directory.publish(dn, b"\x30\x00")
    csv_import(db, "login,mail,name\nalice,alice@example.com,Alice Renamed\n")
    assert directory.certificates(dn) == [b"\x30\x00"]
    directory.close()


# -- fuzzing --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = _database(tmp_path_factory.mktemp("fuzz"))
    import_people(database, PEOPLE.encode(), kind="csv")
    yield database
    database.dispose()


def _fuzz(db: Database, data: bytes, kind: Any) -> None:
    before = snapshot(db)
    try:
        report = import_people(db, data, kind=kind)
    except InputError:
        assert snapshot(db) == before  # a failing import changes nothing
        return
    assert all(e.startswith(("line ", "…")) for e in report.errors), report.errors
    assert report.added + report.updated <= data.count(b"\n") + data.count(b"\r") + 1


_FIELD = st.lists(
    st.sampled_from([*"ab_%*()=,;\"'\\@. \t\r\n\x00\u202ezé", "@example.com"]), max_size=12
).map("".join)
_CSV_LINE = st.lists(_FIELD, min_size=0, max_size=5).map(lambda cells: ",".join(cells))
_CSV_TEXT = st.lists(_CSV_LINE, max_size=6).map(
    lambda lines: "\n".join(["login,mail,name,groups,enabled", *lines])
)
_LDIF_LINE = st.one_of(
    st.sampled_from(
        [
            "",
            "dn: uid=x,dc=y",
            "dn:: dWlkPXg=",
            "uid: fuzz",
            "uid: Fuzz",
            "mail: fuzz@example.com",
            "mail:: ZnV6ekBleGFtcGxlLmNvbQ==",
            "cn: Fuzz",
            "cn:: /w==",
            "cn:< file:///etc/passwd",
            "objectClass: person",
            "changetype: add",
            "changetype: delete",
            "version: 1",
            "# comment",
            " continued",
            "memberOf: cn=g",
        ]
    ),
    st.builds(lambda a, b: f"{a}:{b}", _FIELD, _FIELD),
)
_LDIF_TEXT = st.lists(_LDIF_LINE, max_size=12).map("\n".join)
_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FUZZ
@given(data=st.binary(max_size=300), kind=st.sampled_from(["csv", "ldif"]))
def test_fuzz_random_bytes(fuzz_db: Database, data: bytes, kind: str) -> None:
    _fuzz(fuzz_db, data, kind)


@_FUZZ
@given(text=st.text(max_size=300), kind=st.sampled_from(["csv", "ldif"]))
def test_fuzz_random_text(fuzz_db: Database, text: str, kind: str) -> None:
    _fuzz(fuzz_db, text.encode("utf-8", "surrogatepass"), kind)


@_FUZZ
@given(text=_CSV_TEXT)
def test_fuzz_csv_shaped_text(fuzz_db: Database, text: str) -> None:
    _fuzz(fuzz_db, text.encode("utf-8", "surrogatepass"), "csv")


@_FUZZ
@given(text=_LDIF_TEXT)
def test_fuzz_ldif_shaped_text(fuzz_db: Database, text: str) -> None:
    _fuzz(fuzz_db, text.encode("utf-8", "surrogatepass"), "ldif")
