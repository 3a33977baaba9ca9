"""Renewal in the enrollment portal: after logon (directory password, PIN, or the
renewal link a notice carried), a person whose certificate expires within
`lifecycle.renew_window_days` is offered "Renew"; the new PKCS#12 waits as a one-time
download bound to the session, exactly like an enrollment's.

The window applies to this self-service only (the CLI renews any current certificate).
A dual-key pair renews both halves: a new escrowed encryption key, and a new signing
key made here as at enrollment (never escrowed); each is its own download.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mailpki.ca.serials import show_serial
from mailpki.enrollment.enroll import DUAL_ENCRYPTION_PROFILE
from mailpki.errors import InputError, MailPKIError
from mailpki.instance.enrollments import p12_name
from mailpki.instance.portal import DownloadLink, Portal, PortalOutcome
from mailpki.instance.renewal import plan, renew_with
from mailpki.keymanager.pkcs12 import package
from mailpki.keystore.keys import parse_key_type
from mailpki.policy.passwords import check_password


@dataclass(frozen=True)
class RenewalOffer:
    """The certificate the portal offers to renew."""

    serial: str  # as shown to people (padded hex)
    not_after: datetime
    days_left: int
    dual_key: bool = False  # an encryption/signing pair: both halves are renewed


def offer(portal: Portal, identity: Mapping[str, Any]) -> RenewalOffer | None:
    """The person's current certificate if it expires within the renewal window (for a
    dual-key pair, its encryption half); None otherwise."""
    mail = identity["entry"].get("mail")
    if not mail:
        return None
    try:
        chosen = plan(portal.instance, str(mail))
    except MailPKIError:
        return None  # nothing to renew: the form offers an enrollment
    now = datetime.now(UTC)
    window = timedelta(days=int(portal.instance.config.get("lifecycle.renew_window_days")))
    if chosen.renews.not_after > now + window:
        return None
    left = max(0, (chosen.renews.not_after - now).days)
    dual = chosen.renews.profile == DUAL_ENCRYPTION_PROFILE and chosen.signing is not None
    return RenewalOffer(show_serial(chosen.renews.serial), chosen.renews.not_after, left, dual)


def renew(
    portal: Portal,
    session_token: str,
    identity: Mapping[str, Any],
    *,
    password: str | None,
    confirm: str | None,
    legacy: bool,
) -> PortalOutcome:
    """Renew the offered certificate; bad input or no offer changes nothing."""
    entry = identity["entry"]
    current = offer(portal, identity)
    if current is None:
        raise InputError("you have no certificate that is due for renewal here")
    mail, login = str(entry["mail"]), str(entry["login"])
    chosen = None
    if password is not None:
        name = str(entry.get("display_name") or "")
        avoid = (login, mail.split("@")[0], *name.split())
        chosen = check_password(
            password, confirm or "", min_length=portal.min_password_length, avoid=avoid
        )
    links: list[DownloadLink] = []
    base = p12_name(mail).removesuffix(".p12")
    filename = f"{base}-encryption-renewed.p12" if current.dual_key else f"{base}-renewed.p12"
    instance = portal.instance
    signing_key, signing_csr = None, None
    if current.dual_key:
        key_type = parse_key_type(str(instance.config.get("keymanager.key_type")))
        signing_key, signing_csr = instance.key_manager.new_signing_key(key_type, mail)

    def hand_over(data: bytes, serial: str) -> None:
        handle = portal.downloads.put(
            session_token, serial=serial, email=mail, filename=filename, data=data
        )
        what = "new encryption key and certificate" if current.dual_key else None
        links.append(DownloadLink(handle, filename, what or "new key and certificate"))

    _plan, enrolled = renew_with(
        instance,
        mail,
        actor=f"portal:{login}",
        hand_over=hand_over,
        password=chosen,
        legacy_p12=legacy,
        signing_csr=signing_csr,
    )
    if signing_key is not None and enrolled.signing_certificate is not None:
        secret = chosen or (enrolled.generated_password or "").encode()
        data, _ = package(
            signing_key,
            enrolled.signing_certificate,
            [instance.hierarchy.issuing, instance.hierarchy.root],
            secret,
            friendly_name=f"{mail} (signing, renewed)",
            legacy=legacy,
        )
        name = f"{base}-signing-renewed.p12"
        handle = portal.downloads.put(
            session_token,
            serial=f"{enrolled.signing_certificate.serial_number:x}",
            email=mail,
            filename=name,
            data=data,
        )
        links.append(DownloadLink(handle, name, "new signing key and certificate (never escrowed)"))
    return PortalOutcome(
        email=enrolled.email,
        serial=enrolled.serial,
        downloads=links,
        generated_password=enrolled.generated_password,
    )
