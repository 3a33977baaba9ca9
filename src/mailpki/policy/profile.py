"""Certificate profiles: TOML data files, checked field by field on load.

A profile is the one place that says what a certificate of its kind contains; the
builder in `certificate.py` applies it and adds nothing of its own choosing. The
packaged files live in `profiles/`; an instance may override any of them (or add
new ones) with `<override_dir>/<name>.toml`, which wins over the packaged file.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mailpki.errors import ProfileError

DEFAULT_PROFILE = "sponsored-multipurpose"

MAX_VALIDITY_DAYS = 825  # S/MIME BR 6.3.2 (multipurpose and strict)

# CA/B Forum S/MIME BR reserved policy OIDs: 2.23.140.1.5.<level>.<generation>.
CABF_SMIME_ARC = "2.23.140.1.5"
_LEVELS = {"MAILBOX": 1, "ORGANIZATION": 2, "SPONSORED": 3, "INDIVIDUAL": 4}
_GENERATIONS = {"LEGACY": 1, "MULTIPURPOSE": 2, "STRICT": 3}
# LEGACY is left out on purpose: pkilint flags it as an error for new certificates.
LINT_TYPES: frozenset[str] = frozenset(
    f"{level}-{gen}" for level in _LEVELS for gen in _GENERATIONS if gen != "LEGACY"
)
NO_LINT_TYPE = "none"  # the TOML spelling of lint_type None (TOML has no null)

# Naming rules (see certificate.py) and which BR validation level each one satisfies.
SUBJECT_RULES = frozenset({"mailbox", "sponsored", "directory-dn"})
_RULE_FOR_LEVEL = {"MAILBOX": "mailbox", "SPONSORED": "sponsored"}

KEY_ROLES = frozenset({"dual-use", "signing", "encryption"})
SIGNING_USAGES = frozenset({"digitalSignature", "nonRepudiation"})
RSA_USAGES = SIGNING_USAGES | {"keyEncipherment", "dataEncipherment"}
EC_USAGES = SIGNING_USAGES | {"keyAgreement"}
CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})  # S/MIME BR 6.1.5
MAX_RSA_BITS = 8192  # beyond this, signing/decrypting is too slow for mail clients

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_FIELDS = frozenset(
    {
        "description",
        "lint_type",
        "policy_oids",
        "key_role",
        "key_usage_rsa",
        "key_usage_ec",
        "validity_days",
        "rsa_sizes",
        "curves",
        "subject",
    }
)


@dataclass(frozen=True)
class Profile:
    """One certificate profile, fully validated."""

    name: str
    description: str
    # pkilint S/MIME type, e.g. "SPONSORED-MULTIPURPOSE"; None => RFC 5280 lint only.
    lint_type: str | None
    policy_oids: tuple[str, ...]
    key_usage_rsa: frozenset[str]
    key_usage_ec: frozenset[str]
    validity_days: int
    rsa_sizes: tuple[int, ...]
    curves: tuple[str, ...]
    subject: str  # naming rule: "mailbox" | "sponsored" | "directory-dn"
    # "dual-use" (single key signs and encrypts), "signing" or "encryption" (the two
    # halves of dual-key); the key manager escrows only keys that can decrypt.
    key_role: str = "dual-use"
    source: str = ""  # the file it came from, for messages

    def key_usage_for(self, kind: str) -> frozenset[str]:
        """The key usage names for a key kind ("rsa" | "ec")."""
        if kind == "rsa":
            return self.key_usage_rsa
        if kind == "ec":
            return self.key_usage_ec
        raise ProfileError(f"profile {self.name}: no key usage for key kind {kind!r}")

    @property
    def needs_organisation_identifier(self) -> bool:
        """Sponsor-validated subjects must carry organizationIdentifier (S/MIME BR 7.1.4.2.2)."""
        return self.subject == "sponsored"

    @property
    def encrypts(self) -> bool:
        """True when certificates of this profile carry an encryption key (escrow it)."""
        return self.key_role in {"dual-use", "encryption"}


def smime_policy_oid(lint_type: str) -> str:
    """The CA/B Forum reserved policy OID for a lint type, e.g. MAILBOX-STRICT -> ...1.3."""
    level, _, generation = lint_type.partition("-")
    return f"{CABF_SMIME_ARC}.{_LEVELS[level]}.{_GENERATIONS[generation]}"


def load_profile(name: str, override_dir: Path | None = None) -> Profile:
    """Load and validate one profile; `override_dir/<name>.toml` wins over the packaged one."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ProfileError(f"profile name {name!r} is invalid (lowercase letters, digits, hyphens)")
    sources = _sources(override_dir)
    if name not in sources:
        known = ", ".join(sorted(sources)) or "none"
        raise ProfileError(f"unknown profile {name!r}; known profiles: {known}")
    label, text = sources[name]
    return _parse(name, label, text)


def list_profiles(override_dir: Path | None = None) -> list[Profile]:
    """Every profile (packaged and overrides), sorted by name; any invalid one raises."""
    return [
        _parse(name, label, text) for name, (label, text) in sorted(_sources(override_dir).items())
    ]


def _sources(override_dir: Path | None) -> dict[str, tuple[str, str]]:
    """name -> (label for messages, TOML text); overrides replace packaged entries."""
    found: dict[str, tuple[str, str]] = {}
    packaged = resources.files("mailpki.policy").joinpath("profiles")
    for entry in packaged.iterdir():
        if entry.name.endswith(".toml") and entry.is_file():
            found[entry.name[: -len(".toml")]] = (
                f"packaged profile {entry.name}",
                entry.read_text(encoding="utf-8"),
            )
    if override_dir is not None:
        if not override_dir.is_dir():
            raise ProfileError(f"profile override directory {override_dir} does not exist")
        for path in sorted(override_dir.glob("*.toml")):
            if not _NAME_RE.match(path.stem):
                raise ProfileError(
                    f"{path}: file name is not a valid profile name "
                    "(lowercase letters, digits, hyphens)"
                )
            try:
                found[path.stem] = (str(path), path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ProfileError(f"{path}: cannot be read: {exc}") from exc
    return found


def _parse(name: str, label: str, text: str) -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{label}: not valid TOML: {exc}") from exc
    return _validate(name, label, data)


def _fail(label: str, field: str, why: str) -> ProfileError:
    return ProfileError(f"{label}: field {field!r}: {why}")


def _validate(name: str, label: str, data: dict[str, Any]) -> Profile:
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise _fail(label, unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS))})")
    missing = sorted(_FIELDS - set(data) - {"key_role"})
    if missing:
        raise _fail(label, missing[0], "is required")

    description = _str(label, "description", data["description"])
    lint_raw = _str(label, "lint_type", data["lint_type"])
    lint_type: str | None
    if lint_raw == NO_LINT_TYPE:
        lint_type = None
        if "RFC 5280" not in description:
            raise _fail(
                label,
                "description",
                "a profile without a CA/B Forum lint type must say 'RFC 5280' in its "
                "description, so no one mistakes it for a publicly-trusted profile",
            )
    elif lint_raw in LINT_TYPES:
        lint_type = lint_raw
    else:
        raise _fail(
            label,
            "lint_type",
            f"{lint_raw!r} is not one of {', '.join(sorted(LINT_TYPES))} or {NO_LINT_TYPE!r}",
        )

    policy_oids = tuple(_str_list(label, "policy_oids", data["policy_oids"]))
    for oid in policy_oids:
        if not _OID_RE.match(oid) or (oid[0] in "01" and int(oid.split(".")[1]) >= 40):
            raise _fail(label, "policy_oids", f"{oid!r} is not a dotted OID")
    if len(set(policy_oids)) != len(policy_oids):
        raise _fail(label, "policy_oids", "lists an OID twice")
    reserved = [o for o in policy_oids if o.startswith(CABF_SMIME_ARC + ".")]
    if lint_type is None:
        if reserved:
            raise _fail(
                label,
                "policy_oids",
                f"{reserved[0]} asserts CA/B Forum S/MIME BR compliance, which an "
                "RFC 5280-only profile cannot claim",
            )
    else:
        expected = smime_policy_oid(lint_type)
        if reserved != [expected]:
            raise _fail(
                label, "policy_oids", f"lint_type {lint_type} needs exactly one BR OID, {expected}"
            )

    key_role = _str(label, "key_role", data.get("key_role", "dual-use"))
    if key_role not in KEY_ROLES:
        raise _fail(label, "key_role", f"{key_role!r} is not one of {', '.join(sorted(KEY_ROLES))}")
    ku_rsa = _usages(label, "key_usage_rsa", data["key_usage_rsa"], RSA_USAGES, key_role)
    ku_ec = _usages(label, "key_usage_ec", data["key_usage_ec"], EC_USAGES, key_role)
    if lint_type is not None and lint_type.endswith("-STRICT") and "dataEncipherment" in ku_rsa:
        raise _fail(label, "key_usage_rsa", "dataEncipherment is prohibited in strict profiles")

    validity = data["validity_days"]
    if not isinstance(validity, int) or isinstance(validity, bool):
        raise _fail(label, "validity_days", "must be an integer")
    if not 1 <= validity <= MAX_VALIDITY_DAYS:
        raise _fail(label, "validity_days", f"{validity} is outside 1..{MAX_VALIDITY_DAYS}")

    rsa_sizes = data["rsa_sizes"]
    if not isinstance(rsa_sizes, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in rsa_sizes
    ):
        raise _fail(label, "rsa_sizes", "must be a list of integers")
    for size in rsa_sizes:
        if size < 2048 or size % 8 or size > MAX_RSA_BITS:
            raise _fail(
                label,
                "rsa_sizes",
                f"{size} is not a multiple of 8 between 2048 and {MAX_RSA_BITS}",
            )
    curves = _str_list(label, "curves", data["curves"])
    for curve in curves:
        if curve not in CURVES:
            raise _fail(label, "curves", f"{curve!r} is not one of {', '.join(sorted(CURVES))}")
    if not rsa_sizes and not curves:
        raise _fail(label, "rsa_sizes", "and 'curves' are both empty: no key would be allowed")

    subject = _str(label, "subject", data["subject"])
    if subject not in SUBJECT_RULES:
        raise _fail(
            label, "subject", f"{subject!r} is not one of {', '.join(sorted(SUBJECT_RULES))}"
        )
    if lint_type is not None:
        level = lint_type.partition("-")[0]
        wanted = _RULE_FOR_LEVEL.get(level)
        if wanted is None:
            raise _fail(label, "lint_type", f"{level} validation has no naming rule in mailpki yet")
        if subject != wanted:
            raise _fail(label, "subject", f"{lint_type} certificates need naming rule {wanted!r}")

    return Profile(
        name=name,
        description=description,
        lint_type=lint_type,
        policy_oids=policy_oids,
        key_usage_rsa=ku_rsa,
        key_usage_ec=ku_ec,
        validity_days=validity,
        rsa_sizes=tuple(sorted(set(rsa_sizes))),
        curves=tuple(dict.fromkeys(curves)),
        subject=subject,
        key_role=key_role,
        source=label,
    )


def _str(label: str, field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(label, field, "must be a non-empty string")
    return value.strip()


def _str_list(label: str, field: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(label, field, "must be a list of strings")
    return list(value)


def _usages(
    label: str, field: str, value: object, allowed: frozenset[str], role: str
) -> frozenset[str]:
    names = frozenset(_str_list(label, field, value))
    if not names:
        raise _fail(label, field, "must not be empty")
    bad = sorted(names - allowed)
    if bad:
        raise _fail(
            label, field, f"{bad[0]!r} is not allowed here (allowed: {', '.join(sorted(allowed))})"
        )
    signs = bool(names & SIGNING_USAGES)
    encrypts = bool(names - SIGNING_USAGES)
    if signs and "digitalSignature" not in names:
        raise _fail(label, field, "nonRepudiation needs digitalSignature beside it")
    if role == "signing" and encrypts:
        raise _fail(label, field, "a signing-only profile must not allow encryption usages")
    if role == "encryption" and signs:
        raise _fail(label, field, "an encryption-only profile must not allow signing usages")
    if role == "dual-use" and not (signs and encrypts):
        raise _fail(label, field, "a dual-use profile needs both a signing and an encryption usage")
    return names
