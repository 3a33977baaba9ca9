"""The enrollment portal's use cases: logon, the pre-filled form, enrollment, download.

The web layer only speaks HTTP; everything a person can do in the portal is here, with
its checks, its audit records and its state (server-side sessions and downloads).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session

from mailpki.auth.identity import Identity
from mailpki.ca.succession import restore
from mailpki.directory.entry import DirectoryEntry
from mailpki.enrollment.enroll import DUAL_ENCRYPTION_PROFILE, DUAL_SIGNING_PROFILE
from mailpki.enrollment.invitations import peek, redeem
from mailpki.enrollment.portal_store import DownloadStore, SessionStore, StoredDownload
from mailpki.enrollment.requests import RequestQueued
from mailpki.errors import (
    InputError,
    MailPKIError,
    RevocationError,
)
from mailpki.instance.directory_ops import audited_logon
from mailpki.instance.enrollments import deliver_now, enroll_with, p12_name
from mailpki.instance.instance import Instance
from mailpki.instance.sso import OidcLogons, negotiate
from mailpki.instance.trust_kit import TrustKit, personal_profile
from mailpki.keymanager.pkcs12 import package
from mailpki.keystore.configured import store_secret
from mailpki.keystore.keys import parse_key_type
from mailpki.policy.passwords import check_password

__all__ = ["DownloadLink", "FormView", "Portal", "PortalOutcome"]

Method = Literal["directory", "pin", "kerberos", "oidc"]
_PROVIDER_NAMES_SECONDS = 30.0  # how long the logon page's list of OpenID providers is kept


@dataclass(frozen=True)
class FormView:
    """What the form shows: the person as the directory has them."""

    login: str
    method: Method
    name: str
    mail: str
    organisation: str
    site: str
    dual_key_allowed: bool
    key_type: str


@dataclass(frozen=True)
class DownloadLink:
    handle: str
    filename: str
    what: str  # shown to the person


@dataclass(frozen=True)
class InvitedPerson:
    """Whom an invitation link is for, as its landing page names them."""

    name: str  # "" when the directory does not answer
    mail: str


@dataclass(frozen=True)
class PortalOutcome:
    email: str
    queued_request: int | None = None
    serial: str | None = None
    downloads: list[DownloadLink] = field(default_factory=list)
    generated_password: str | None = None


def _entry_from(data: Mapping[str, Any]) -> DirectoryEntry:
    values = dict(data)
    values["groups"] = tuple(values.get("groups") or ())
    return DirectoryEntry(**values)


def _display_name(entry: DirectoryEntry) -> str:
    joined = " ".join(p for p in (entry.given_name, entry.surname) if p)
    return entry.display_name or joined or entry.login


class Portal:
    """The portal of one instance (one per server process; thread-safe: it holds no
    per-request state)."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        config = instance.config
        self.methods: tuple[Method, ...] = tuple(
            m for m in ("directory", "pin") if m in str(config.get("portal.logon")).split(",")
        )
        self.dual_key_allowed = config.get("portal.dual_key") == "true"
        self.min_password_length = int(config.get("portal.min_password_length"))
        self.base_url = str(config.get("web.base_url")).rstrip("/")
        self.org = str(config.get("instance.org"))
        self._delivery_state = threading.Lock()
        self._delivering = False
        self._deliver_again = False
        self.kerberos = instance.kerberos_enabled
        self._provider_names: tuple[float, list[str]] = (-_PROVIDER_NAMES_SECONDS, [])
        secure = str(config.get("portal.secure_cookies"))
        self.secure_cookies = secure == "true" or (
            secure == "auto" and urlsplit(self.base_url).scheme == "https"
        )

    @cached_property
    def csrf_key(self) -> bytes:
        """HMAC key of the pre-logon CSRF tokens, derived from the instance secret (the
        same on every node, stored nowhere)."""
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"mailpki portal pre-logon csrf"
        ).derive(store_secret(self.instance.config))

    def prepare(self) -> None:
        """Warm what the first enrollment would otherwise wait for (the CA key, pkilint's
        validators, ~0.6 s); run by the server at start-up, in the background."""
        self.instance.ca.prepare([None, DUAL_ENCRYPTION_PROFILE, DUAL_SIGNING_PROFILE])
        _ = self.csrf_key

    @cached_property
    def sessions(self) -> SessionStore:
        config = self.instance.config
        return SessionStore(
            self.instance.db,
            idle=timedelta(minutes=int(config.get("portal.session_idle_minutes"))),
            absolute=timedelta(hours=int(config.get("portal.session_hours"))),
        )

    @cached_property
    def downloads(self) -> DownloadStore:
        minutes = int(self.instance.config.get("portal.download_minutes"))
        return DownloadStore(self.instance.db, lifetime=timedelta(minutes=minutes))

    # -- logon ---------------------------------------------------------------------------

    @cached_property
    def root_name(self) -> str:
        """The root CA's name as mail programs list it (the tutorial says to trust it)."""
        names = self.instance.hierarchy.root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return (
            str(names[0].value) if names else self.instance.hierarchy.root.subject.rfc4514_string()
        )

    def p12_files(self, identity: Mapping[str, Any] | None, fetched: Sequence[str]) -> list[str]:
        """The names of a person's PKCS#12 files, for the tutorial: those of this session,
        else the name their file gets, else a pattern."""
        if fetched:
            return list(fetched)
        if identity is not None and "entry" in identity:  # a person, not a local operator
            return [p12_name(self.form(identity).mail)]
        return ["<your mail address>.p12"]

    def invitation_for(self, token: str) -> InvitedPerson:
        """Who an invitation link was sent to (name from the directory when it answers,
        and the mail address), if the link can still be used (InputError subclasses say
        why not); the link is not used up."""
        row = peek(self.instance.db, token)
        name = ""
        try:
            entry = self.instance.directories.find_by_login(row.login)
            if entry is not None and entry.directory == row.directory:
                name = entry.display_name or ""
        except MailPKIError:
            pass  # the page still names the address
        return InvitedPerson(name=name, mail=row.mail)

    def logon(
        self, *, method: str, login: str, secret: str, source: str, invitation: str | None
    ) -> dict[str, Any]:
        """Check the credentials (and the invitation, which they use up); the identity
        to keep in the session. AuthenticationError does not say which part was wrong."""
        if method not in self.methods:
            raise InputError("that way of logging on is not offered here")
        login = login.strip()  # empty, over-long or odd logins: the authenticator refuses
        # A dead link fails before any password check; the address it was sent to must
        # be the person's, checked before a one-time PIN is spent.
        invited = peek(self.instance.db, invitation).mail if invitation is not None else None
        authenticator = (
            self.instance.directory_logon if method == "directory" else self.instance.pin_logon
        )
        identity: Identity = audited_logon(
            self.instance,
            authenticator,
            method=method,
            login=login,
            secret=secret,
            source=source,
            actor=f"portal:{source}",
            expect_mail=invited,
        )
        entry = identity.entry
        if invitation is not None:
            redeem(self.instance.db, invitation)
        return {"entry": entry.to_dict(), "method": identity.method}

    def negotiate(self, header: str, *, source: str) -> tuple[dict[str, Any], str | None]:
        """Kerberos single sign-on: the identity to keep in the session and the mutual
        authentication token for the browser (AuthenticationError says why not)."""
        outcome = negotiate(self.instance, header, source=source, actor=f"portal:{source}")
        return {"entry": outcome.identity.entry.to_dict(), "method": "kerberos"}, outcome.reply

    @cached_property
    def oidc(self) -> OidcLogons:
        return OidcLogons(self.instance)

    def oidc_names(self) -> list[str]:
        """The OpenID providers offered on the logon page (re-read every 30 s)."""
        read_at, names = self._provider_names
        if time.monotonic() - read_at >= _PROVIDER_NAMES_SECONDS:
            names = self.oidc.names()
            self._provider_names = (time.monotonic(), names)
        return names

    def oidc_begin(self, name: str, *, browser: str, next_page: str) -> str:
        """Where to send the browser to log on with OpenID provider `name`."""
        return self.oidc.begin(name, browser=browser, next_page=next_page)

    def oidc_finish(
        self, *, state: str, code: str, error: str, browser: str, source: str, issuer: str = ""
    ) -> tuple[dict[str, Any], str]:
        """The identity for the session and the page to go on to, from the provider's
        callback (AuthenticationError says why not)."""
        outcome = self.oidc.finish(
            state=state, code=code, error=error, browser=browser, source=source,
            actor=f"portal:{source}", issuer=issuer,
        )  # fmt: skip
        identity = {"entry": outcome.identity.entry.to_dict(), "method": "oidc"}
        return identity, outcome.next_page

    # -- the form ------------------------------------------------------------------------

    def form(self, identity: Mapping[str, Any]) -> FormView:
        entry = _entry_from(identity["entry"])
        return FormView(
            login=entry.login,
            method=identity["method"],
            name=_display_name(entry),
            mail=entry.mail or "",
            organisation=entry.organisation or self.org,
            site=entry.site or "",
            dual_key_allowed=self.dual_key_allowed,
            key_type=str(self.instance.config.get("keymanager.key_type")),
        )

    # -- enrollment ----------------------------------------------------------------------

    def enroll(
        self,
        session_token: str,
        identity: Mapping[str, Any],
        *,
        dual_key: bool,
        password: str | None,
        confirm: str | None,
        legacy: bool,
    ) -> PortalOutcome:
        """Approve (or queue), issue, escrow, package; the PKCS#12 files wait as one-time
        downloads bound to this session. Bad input changes nothing."""
        entry = _entry_from(identity["entry"])
        if not entry.mail:
            raise InputError(
                "the directory has no mail address for you: ask IT to add one, then log on again"
            )
        if dual_key and not self.dual_key_allowed:
            raise InputError("dual-key enrollment is not offered here")
        chosen = None
        if password is not None:
            avoid = (entry.login, entry.mail.split("@")[0], *_display_name(entry).split())
            chosen = check_password(
                password, confirm or "", min_length=self.min_password_length, avoid=avoid
            )
        actor = f"portal:{entry.login}"
        try:
            approved_request = self.instance.approvals.authorize(entry, actor=actor)
        except RequestQueued as queued:
            return PortalOutcome(email=entry.mail, queued_request=queued.request_id)
        signing_key, signing_csr = None, None
        if dual_key:
            key_type = parse_key_type(str(self.instance.config.get("keymanager.key_type")))
            signing_key, signing_csr = self.instance.key_manager.new_signing_key(
                key_type, entry.mail
            )
        links: list[DownloadLink] = []
        base = p12_name(entry.mail).removesuffix(".p12")

        def hand_over(data: bytes, serial: str) -> None:
            name = f"{base}-encryption.p12" if dual_key else f"{base}.p12"
            what = "encryption key and certificate" if dual_key else "key and certificate"
            handle = self.downloads.put(
                session_token, serial=serial, email=entry.mail or "", filename=name, data=data
            )
            links.append(DownloadLink(handle, name, what))

        enrolled = enroll_with(
            self.instance,
            email=entry.mail,
            name=_display_name(entry),
            actor=actor,
            hand_over=hand_over,
            password=chosen,
            legacy_p12=legacy,
            signing_csr=signing_csr,
            given_name=entry.given_name,
            surname=entry.surname,
            organisation=entry.organisation,
            site=entry.site,
        )
        if signing_key is not None and enrolled.signing_certificate is not None:
            secret = chosen or (enrolled.generated_password or "").encode()
            data, _ = package(
                signing_key,
                enrolled.signing_certificate,
                [self.instance.hierarchy.issuing, self.instance.hierarchy.root],
                secret,
                friendly_name=f"{_display_name(entry)} (signing)",
                legacy=legacy,
            )
            name = f"{base}-signing.p12"
            handle = self.downloads.put(
                session_token,
                serial=f"{enrolled.signing_certificate.serial_number:x}",
                email=entry.mail,
                filename=name,
                data=data,
            )
            links.append(DownloadLink(handle, name, "signing key and certificate (never escrowed)"))
        if approved_request is not None:
            self.instance.approvals.mark_enrolled(approved_request, enrolled.serial)
        return PortalOutcome(
            email=enrolled.email,
            serial=enrolled.serial,
            downloads=links,
            generated_password=enrolled.generated_password,
        )

    def after_enrollment(self) -> None:
        """Send the notices and publish the certificate (after the response: best effort,
        both stay queued for housekeeping on failure). Single-flight: while one run
        works through the outbox, later calls only ask it to go round once more (50
        enrollments at once make one or two runs, not 50 competing ones)."""
        with self._delivery_state:
            if self._delivering:
                self._deliver_again = True
                return
            self._delivering = True
        try:
            while True:
                deliver_now(self.instance)
                with self._delivery_state:
                    if not self._deliver_again:
                        return
                    self._deliver_again = False
        finally:
            with self._delivery_state:
                self._delivering = False

    def take(
        self, handle: str, session_token: str, *, login: str, form: str = "pkcs12"
    ) -> StoredDownload:
        download = self.downloads.take(handle, session_token)
        data = {"serial": download.serial, "email": download.email}
        if form != "pkcs12":
            data["form"] = form
        with self.instance.db.transaction() as session:
            self.instance.audit.append(
                session, "portal.downloaded", actor=f"portal:{login}", data=data
            )
        return download

    def take_as_profile(self, handle: str, session_token: str, *, login: str) -> tuple[str, bytes]:
        """The same one-time download as an Apple profile for iPhone and iPad (file name,
        bytes): taking it spends the download, as taking the .p12 does."""
        return personal_profile(
            self.instance, self.take(handle, session_token, login=login, form="mobileconfig")
        )

    @cached_property
    def trust_kit(self) -> TrustKit:
        """The root in every form outside correspondents need (the /trust page)."""
        return TrustKit.of(self.instance)

    # -- housekeeping ----------------------------------------------------------------------

    def withdraw_unfetched(self, *, actor: str) -> list[str]:
        """Revoke the certificates whose download expired unused (nobody has their key
        but the escrow), drop those downloads and old sessions."""
        self.sessions.purge_expired()
        serials = self.downloads.expired_unfetched()
        withdrawn = []
        for serial in serials:

            def current_again(session: Session, serial: str = serial) -> None:
                # A renewal nobody downloaded: the certificate it replaced is current again.
                restore(self.instance.ca, self.instance.audit, session, successor=serial,
                        actor=actor)  # fmt: skip

            try:
                self.instance.ca.revoke(
                    int(serial, 16),
                    x509.ReasonFlags.cessation_of_operation,
                    actor=actor,
                    within=current_again,
                )
                withdrawn.append(serial)
            except RevocationError:
                withdrawn.append(serial)  # revoked meanwhile
            except (MailPKIError, ValueError):
                continue
        self.downloads.forget(withdrawn)
        return withdrawn
