"""Administrator roles of the Key Recovery Service, carried in certificates.

A role is a private certificate policy OID (ARC.1 recovery admin, ARC.2 recovery
officer, ARC.3 auditor) next to the S/MIME BR policy OID, so admin certificates stay
ordinary, lintable S/MIME certificates issued by the instance's CA. The arc is a
setting: an organisation should use an arc of its own (its IANA Private Enterprise
Number). The default is RFC 5612's documentation PEN, 32473. UUID arcs (2.25.N) would
need no registration, but pkilint cannot decode OID arcs above 32 bits.
"""

from __future__ import annotations

import re
from typing import Literal, cast, get_args

from cryptography import x509

from mailpki.errors import ConfigError, InputError

Role = Literal["recovery-admin", "recovery-officer", "auditor"]
ROLES: tuple[str, ...] = get_args(Role)
DEFAULT_ROLE_ARC = "1.3.6.1.4.1.32473.1"
ADMIN_PROFILE = "admin"
_ROLE_NUMBERS: dict[str, int] = {"recovery-admin": 1, "recovery-officer": 2, "auditor": 3}
_OID_RE = re.compile(r"[12](\.(0|[1-9][0-9]{0,8}))+")


def parse_role(text: str) -> Role:
    value = text.strip().lower()
    if value not in ROLES:
        raise InputError(f"unknown role {text!r}: choose one of {', '.join(ROLES)}")
    return cast(Role, value)


def check_arc(arc: str) -> str:
    """`arc` if it is a dotted OID whose arcs fit in 32 bits (what pkilint decodes)."""
    if not _OID_RE.fullmatch(arc) or any(int(part) >= 2**32 for part in arc.split(".")):
        raise ConfigError(
            f"role OID arc {arc!r} is not a dotted OID with arcs below 2^32 (e.g. 1.3.6.1.4.1.PEN.1)"
        )
    return arc


def role_oid(arc: str, role: Role) -> str:
    return f"{check_arc(arc)}.{_ROLE_NUMBERS[role]}"


def roles_of(certificate: x509.Certificate, arc: str) -> frozenset[Role]:
    """The roles a certificate's policy OIDs grant under `arc` (empty for subscribers)."""
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except (x509.ExtensionNotFound, ValueError):
        return frozenset()
    oids = {info.policy_identifier.dotted_string for info in policies}
    return frozenset(cast(Role, role) for role in ROLES if role_oid(arc, cast(Role, role)) in oids)
