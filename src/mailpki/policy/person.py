"""The person a certificate is for, validated once at the edge.

Everything here arrives from outside (CLI flags, web forms, directory entries), so
`Person.from_untrusted` is the only way the rest of mailpki should build one: it
normalises, checks lengths against the X.520 upper bounds and refuses what the
CA/B Forum linter would refuse later (insignificant values, HTML entities), so an
enrollment fails early with a message naming the field.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

from mailpki.errors import InputError

# X.520 / RFC 5280 upper bounds (characters). givenName/surname have ub-name 32768 in
# X.520; 64 keeps them within what directories and mail clients display.
UB_COMMON_NAME = 64
UB_ORGANISATION = 64
UB_ORGANISATIONAL_UNIT = 64
UB_PERSONAL_NAME = 64
UB_ORGANISATION_IDENTIFIER = 64
MAX_EMAIL = 254  # RFC 5321 path limit minus the angle brackets
MAX_LOCAL_PART = 64

# Categories that never belong in a name: controls, surrogates, private use,
# unassigned, line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
# Bidirectional overrides/isolates and marks: invisible, and a spoofing tool.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# pkilint's cabf.insignificant_attribute_value_present: a value needs a letter,
# number or symbol.
_SIGNIFICANT_MAJOR = frozenset("LNS")

# RFC 5322 dot-atom text (no quoted local parts: many mail clients mangle them).
_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# CA/B Forum organizationIdentifier: scheme (3 letters) + country (2) + optional
# "+" state/province + "-" registration reference.
_ORG_ID = re.compile(
    r"^(?P<scheme>[A-Z]{3})(?P<country>[A-Z]{2})(\+[A-Z0-9]{1,3})?(-(?P<ref>.+))?$"
)
_ORG_ID_SCHEMES_WITH_REFERENCE = frozenset({"NTR", "VAT", "PSD", "LEI"})
_ORG_ID_SCHEMES_WITHOUT_REFERENCE = frozenset({"GOV", "INT"})


@dataclass(frozen=True)
class Person:
    """A validated subject. Build it with `from_untrusted`, not the constructor."""

    name: str  # "Alice Smith"
    email: str  # "alice@example.com": ASCII addr-spec, domain lowercased
    organisation: str | None = None
    site: str | None = None  # becomes OU in enterprise-private
    given_name: str | None = None
    surname: str | None = None
    # CA/B Forum organizationIdentifier (e.g. "NTRGB-12345678", "VATDE-123456789"):
    # sponsor-validated profiles require it, so it usually comes from instance config.
    organisation_identifier: str | None = None

    @classmethod
    def from_untrusted(
        cls,
        *,
        name: str,
        email: str,
        organisation: str | None = None,
        site: str | None = None,
        given_name: str | None = None,
        surname: str | None = None,
        organisation_identifier: str | None = None,
    ) -> Person:
        """Validate and normalise outside input; raise InputError naming the field."""
        clean_name = _text("name", name, UB_COMMON_NAME)
        if clean_name is None:
            raise InputError("name: must not be empty")
        clean_given = _text("given_name", given_name, UB_PERSONAL_NAME)
        clean_surname = _text("surname", surname, UB_PERSONAL_NAME)
        if clean_given is None and clean_surname is None:
            # Only split when it cannot be wrong: "Mary Ann Smith" or "van Dijk"
            # have no single right answer, so leave them to the directory.
            words = clean_name.split()
            if len(words) == 2 and all(any(c.isalpha() for c in w) for w in words):
                clean_given, clean_surname = words
        return cls(
            name=clean_name,
            email=_email(email),
            organisation=_text("organisation", organisation, UB_ORGANISATION),
            site=_text("site", site, UB_ORGANISATIONAL_UNIT),
            given_name=clean_given,
            surname=clean_surname,
            organisation_identifier=_organisation_identifier(organisation_identifier),
        )


def _text(field: str, value: object, limit: int) -> str | None:
    """Strip and NFC-normalise a directory-string value; None/blank means absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{field}: must be text, not {type(value).__name__}")
    text = unicodedata.normalize("NFC", value).strip()
    if not text:
        return None
    for char in text:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES or char in _BIDI_CONTROLS:
            raise InputError(
                f"{field}: contains a control or invisible character (U+{ord(char):04X})"
            )
    if len(text) > limit:
        raise InputError(f"{field}: {len(text)} characters is longer than the limit of {limit}")
    if not any(unicodedata.category(c)[0] in _SIGNIFICANT_MAJOR for c in text):
        raise InputError(f"{field}: must contain at least one letter or digit")
    if html.unescape(text) != text:
        raise InputError(f"{field}: contains an HTML entity ({text!r}); give the plain text")
    return text


def _email(value: object) -> str:
    """Check an ASCII addr-spec and lowercase its domain (the local part is case-sensitive)."""
    if not isinstance(value, str):
        raise InputError("email: must be text")
    address = value.strip()
    if not address:
        raise InputError("email: must not be empty")
    if not address.isascii():
        raise InputError(
            "email: must be ASCII (internationalised addresses need SmtpUTF8Mailbox, "
            "which mailpki does not issue)"
        )
    if len(address) > MAX_EMAIL:
        raise InputError(f"email: {len(address)} characters is longer than {MAX_EMAIL}")
    if address.count("@") != 1:
        raise InputError("email: must contain exactly one '@'")
    local, domain = address.split("@")
    if not local:
        raise InputError("email: the part before '@' is empty")
    if len(local) > MAX_LOCAL_PART:
        raise InputError(f"email: the part before '@' is longer than {MAX_LOCAL_PART}")
    if not _ATEXT.match(local):
        raise InputError(
            "email: the part before '@' has a space, control character or character "
            "not allowed in an unquoted address, or a misplaced dot"
        )
    domain = domain.lower()
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DNS_LABEL.match(label) for label in labels):
        raise InputError(
            f"email: domain {domain!r} is not a fully qualified DNS name "
            "(letters, digits and inner hyphens, 1-63 per label, at least one dot)"
        )
    if labels[-1].isdigit():
        raise InputError(f"email: domain {domain!r} has a numeric top-level label")
    if len(domain) > 253:
        raise InputError("email: domain is longer than 253 characters")
    return f"{local}@{domain}"


def _organisation_identifier(value: object) -> str | None:
    """Check the CA/B Forum organizationIdentifier syntax (S/MIME BR 7.1.4.2.2 d)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError("organisation_identifier: must be text")
    text = value.strip()
    if not text:
        return None
    if len(text) > UB_ORGANISATION_IDENTIFIER or not text.isascii() or not text.isprintable():
        raise InputError(
            "organisation_identifier: must be printable ASCII of at most "
            f"{UB_ORGANISATION_IDENTIFIER} characters"
        )
    match = _ORG_ID.match(text)
    if match is None:
        raise InputError(
            f"organisation_identifier: {text!r} is not SCHEME+COUNTRY-REFERENCE "
            "(e.g. NTRGB-12345678)"
        )
    scheme, reference = match["scheme"], match["ref"]
    if scheme in _ORG_ID_SCHEMES_WITH_REFERENCE and not reference:
        raise InputError(f"organisation_identifier: scheme {scheme} needs a registration reference")
    if scheme in _ORG_ID_SCHEMES_WITHOUT_REFERENCE and reference:
        raise InputError(
            f"organisation_identifier: scheme {scheme} takes no registration reference"
        )
    if scheme not in _ORG_ID_SCHEMES_WITH_REFERENCE | _ORG_ID_SCHEMES_WITHOUT_REFERENCE:
        raise InputError(
            f"organisation_identifier: unknown scheme {scheme} (NTR, VAT, PSD, LEI, GOV or INT)"
        )
    return text
