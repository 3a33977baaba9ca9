"""`mailpki demo`: a ready instance with sample people, to try the enrollment portal.

A demo home is one this module created: it holds `demo-credentials.txt` (mode 600) with
the sample people and their one-time HR PINs. Running the demo again on that home
creates nothing and returns the same credentials, except that a PIN already used is
replaced by a fresh one; any other instance is left as it is.

The embedded directory keeps no passwords (its people log on with an HR PIN), so every
sample person gets a PIN: that is the logon the portal offers them.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from mailpki.base.files import folder_entries, remove_new_entries, write_atomically
from mailpki.errors import InstanceError
from mailpki.instance import directory_ops
from mailpki.instance.bootstrap import InitOptions, initialise
from mailpki.instance.config import CONFIG_FILE, Config
from mailpki.instance.instance import Instance
from mailpki.notify.mail import OUTBOX_FOLDER
from mailpki.store.models import HRPin

CREDENTIALS_FILE = "demo-credentials.txt"
DEMO_ORG = "Example Corp"
DEMO_DOMAIN = "example.com"
# A registered-looking identifier makes the default profile sponsor-validated, so the
# certificates carry the person's name and organisation, as in a real deployment.
DEMO_ORG_ID = "NTRGB-12345678"
# CDP and AIA go into every certificate and pkilint refuses IP addresses and localhost
# there, so they keep the public-looking name `init` gives them while the portal's
# links (web.base_url) point at the local server.
DEMO_PKI_URL = f"http://pki.{DEMO_DOMAIN}"
PIN_DIGITS = 8

_HEADER = (
    "# mailpki demo: the sample people of this instance and their one-time HR PINs.\n"
    "# For trying out only: whoever can read this file can log on as these people.\n"
    "# Portal logon: employee id (or mail) and PIN; each PIN works for one logon.\n"
    "#\n"
)
_COLUMNS = ("employee_id", "login", "pin", "name", "mail", "department")


@dataclass(frozen=True)
class SamplePerson:
    """One person of the embedded sample directory (without a secret)."""

    employee_id: str
    login: str
    given_name: str
    surname: str
    department: str  # stored as the entry's site: LDIF's ou, the OU of enterprise profiles

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.surname}"

    @property
    def mail(self) -> str:
        return f"{self.login}@{DEMO_DOMAIN}"


SAMPLE_PEOPLE: tuple[SamplePerson, ...] = (
    SamplePerson("1001", "alice.martin", "Alice", "Martin", "Sales"),
    SamplePerson("1002", "bob.okafor", "Bob", "Okafor", "Engineering"),
    SamplePerson("1003", "zoe.dupre", "Zoë", "Dupré", "Engineering"),
    SamplePerson("1004", "jose.alvarez", "José", "Álvarez", "Sales"),
    SamplePerson("1005", "priya.raman", "Priya", "Raman", "Finance"),
    SamplePerson("1006", "wei.chen", "Wei", "Chen", "Engineering"),
    SamplePerson("1007", "hannah.schmidt", "Hannah", "Schmidt", "HR"),
    SamplePerson("1008", "tom.obrien", "Tom", "O'Brien", "Finance"),
)


@dataclass(frozen=True)
class DemoPerson:
    login: str
    name: str
    mail: str
    department: str
    employee_id: str


@dataclass(frozen=True)
class DemoPin:
    employee_id: str
    name: str
    mail: str
    pin: str


@dataclass(frozen=True)
class DemoInfo:
    home: Path
    base_url: str  # the portal's URL as configured (web.base_url)
    pki_base_url: str  # where certificates send clients for CRLs and OCSP
    people: tuple[DemoPerson, ...]
    pins: tuple[DemoPin, ...]
    created: bool  # made by this call
    is_demo: bool  # False: an instance `mailpki demo` did not create; nothing was changed
    outbox: Path | None  # where mail goes as .eml files; None when an SMTP host is set
    smtp_host: str
    credentials_file: Path | None


def new_pin() -> str:
    """A random all-digit PIN, as HR would hand out."""
    return f"{secrets.randbelow(10**PIN_DIGITS):0{PIN_DIGITS}d}"


def _csv(rows: Sequence[Sequence[str]]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def people_csv(people: Sequence[SamplePerson]) -> bytes:
    """The embedded-directory import file (people_import's CSV columns)."""
    rows = [("login", "mail", "name", "given_name", "surname", "organisation", "site",
             "groups", "employee_id")]  # fmt: skip
    for p in people:
        groups = f"staff;{p.department.lower()}"
        rows.append((p.login, p.mail, p.name, p.given_name, p.surname, DEMO_ORG,
                     p.department, groups, p.employee_id))  # fmt: skip
    return _csv(rows)


def pins_csv(pins: Sequence[DemoPin]) -> bytes:
    """The HR PIN import file (`pins import` columns)."""
    return _csv(
        [("employee_id", "mail", "name", "pin")]
        + [(p.employee_id, p.mail, p.name, p.pin) for p in pins]
    )


def format_credentials(people: Sequence[DemoPerson], pins: Sequence[DemoPin]) -> bytes:
    """The credentials file: a comment header, then one tab-separated line per person."""
    by_id = {pin.employee_id: pin.pin for pin in pins}
    lines = ["\t".join(_COLUMNS)]
    for p in people:
        fields = (p.employee_id, p.login, by_id.get(p.employee_id, ""), p.name, p.mail,
                  p.department)  # fmt: skip
        if any("\t" in f or "\n" in f for f in fields):
            raise InstanceError(f"a demo person's details contain a tab or newline: {p.login}")
        lines.append("\t".join(fields))
    return (_HEADER + "\n".join(lines) + "\n").encode("utf-8")


def parse_credentials(
    text: str, *, where: Path
) -> tuple[tuple[DemoPerson, ...], tuple[DemoPin, ...]]:
    """Read back what format_credentials wrote; a damaged file is an InstanceError."""
    people: list[DemoPerson] = []
    pins: list[DemoPin] = []
    header_seen = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if not header_seen:
            if tuple(fields) != _COLUMNS:
                raise InstanceError(
                    f"{where} is damaged (line {number}: expected the header "
                    f"{' '.join(_COLUMNS)}); remove the folder and run 'mailpki demo' again"
                )
            header_seen = True
            continue
        if len(fields) != len(_COLUMNS) or not all(fields[i] for i in (0, 1, 3, 4)):
            raise InstanceError(
                f"{where} is damaged (line {number}); remove the folder and run "
                "'mailpki demo' again"
            )
        employee_id, login, pin, name, mail, department = fields
        people.append(DemoPerson(login, name, mail, department, employee_id))
        if pin:
            pins.append(DemoPin(employee_id, name, mail, pin))
    if not people:
        raise InstanceError(f"{where} lists nobody; remove the folder and run 'mailpki demo' again")
    return tuple(people), tuple(pins)


def configured_base_url(home: Path) -> str | None:
    """web.base_url of the instance in `home`, or None when there is none yet."""
    if not (home / CONFIG_FILE).exists():
        return None
    return str(Config.load(home).get("web.base_url"))


def prepare_demo(home: Path, *, base_url: str, actor: str) -> DemoInfo:
    """A demo instance in `home`: created with sample people on first use (its portal
    links under `base_url`), else reused as it is, with spent PINs renewed.

    A home holding another instance (no credentials file) is not changed at all."""
    credentials = home / CREDENTIALS_FILE
    if not (home / CONFIG_FILE).exists():
        people, pins = _create(home, base_url=base_url, actor=actor)
        return _info(home, people, pins, created=True)
    if not credentials.is_file():
        return _info(home, (), (), created=False, is_demo=False)
    try:
        text = credentials.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InstanceError(f"cannot read {credentials}: {exc}") from None
    people, pins = parse_credentials(text, where=credentials)
    # Settings are never changed here (web.base_url least of all: invitations already
    # mailed carry it); only spent PINs are replaced, which is what a rerun is for.
    instance = Instance.open(home)
    try:
        pins = _refresh_spent_pins(instance, people, pins, actor=actor)
    finally:
        instance.close()
    return _info(home, people, pins, created=False)


def _refresh_spent_pins(
    instance: Instance, people: tuple[DemoPerson, ...], pins: tuple[DemoPin, ...], *, actor: str
) -> tuple[DemoPin, ...]:
    """A PIN works for one logon and is void after too many wrong tries: a demo run gives
    the people whose PIN is used, void or expired a new one (so the printed table always
    works) and rewrites the credentials file."""
    max_attempts = int(instance.config.get("pins.max_attempts"))
    with instance.db.session() as session:
        spent = set(
            session.scalars(
                select(HRPin.employee_id).where(
                    HRPin.used_at.is_not(None)
                    | (HRPin.expires_at <= datetime.now(UTC))
                    | (HRPin.attempts >= max_attempts)
                )
            )
        )
    fresh = tuple(
        DemoPin(p.employee_id, p.name, p.mail, new_pin()) for p in pins if p.employee_id in spent
    )
    if not fresh:
        return pins
    report = directory_ops.import_hr_pins(instance, pins_csv(fresh), actor=actor)
    if report.errors:
        raise InstanceError(f"the demo PINs were not renewed: {'; '.join(report.errors)}")
    renewed = {p.employee_id: p for p in fresh}
    pins = tuple(renewed.get(p.employee_id, p) for p in pins)
    write_atomically(
        instance.home / CREDENTIALS_FILE, format_credentials(people, pins), private=True
    )
    return pins


def _info(
    home: Path,
    people: tuple[DemoPerson, ...],
    pins: tuple[DemoPin, ...],
    *,
    created: bool,
    is_demo: bool = True,
) -> DemoInfo:
    config = Config.load(home)
    smtp_host = str(config.get("smtp.host")).strip()
    return DemoInfo(
        home=home,
        base_url=str(config.get("web.base_url")),
        pki_base_url=str(config.get("web.pki_base_url")) or str(config.get("web.base_url")),
        people=people,
        pins=pins,
        created=created,
        is_demo=is_demo,
        outbox=None if smtp_host else home / OUTBOX_FOLDER,
        smtp_host=smtp_host,
        credentials_file=home / CREDENTIALS_FILE if is_demo else None,
    )


def _create(
    home: Path, *, base_url: str, actor: str
) -> tuple[tuple[DemoPerson, ...], tuple[DemoPin, ...]]:
    """init, the portal URL, the people and their PINs, then the credentials file (last:
    it marks a complete demo). Whatever fails, what this made is removed."""
    people = tuple(
        DemoPerson(p.login, p.name, p.mail, p.department, p.employee_id) for p in SAMPLE_PEOPLE
    )
    pins = tuple(DemoPin(p.employee_id, p.name, p.mail, new_pin()) for p in people)
    home_existed, existing = folder_entries(home)
    instance: Instance | None = None
    try:
        result = initialise(
            home, InitOptions(org=DEMO_ORG, domain=DEMO_DOMAIN, org_id=DEMO_ORG_ID), actor=actor
        )
        instance = result.instance
        instance.set_config("web.pki_base_url", DEMO_PKI_URL, actor=actor)
        instance.set_config("web.base_url", base_url, actor=actor)
        # The sample people have PINs only: offer just the PIN logon.
        instance.set_config("portal.logon", "pin", actor=actor)
        report = directory_ops.import_embedded(
            instance, people_csv(SAMPLE_PEOPLE), "csv", actor=actor
        )
        if report.errors or report.added != len(people):
            raise InstanceError(f"the sample people were not imported: {'; '.join(report.errors)}")
        pin_report = directory_ops.import_hr_pins(instance, pins_csv(pins), actor=actor)
        if pin_report.errors or pin_report.added != len(pins):
            raise InstanceError(f"the demo PINs were not imported: {'; '.join(pin_report.errors)}")
        instance.seal()
        write_atomically(home / CREDENTIALS_FILE, format_credentials(people, pins), private=True)
    except BaseException:
        if instance is not None:
            instance.close()
            instance = None
        remove_new_entries(home, home_existed, existing)
        raise
    finally:
        if instance is not None:
            instance.close()
    return people, pins
