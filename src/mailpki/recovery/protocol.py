"""The messages administrators send to the Key Recovery Service.

A message is a small JSON object, CMS-signed by the administrator's key. Besides its
action it carries what makes it safe to accept once and only here:
  - `service`: the id of the KRS it is meant for (a signature cannot be replayed to
    another service);
  - `nonce` and `time`: the KRS refuses a nonce it has seen and a time outside its
    window, so a captured message cannot be replayed;
  - `ocsp`: a fresh OCSP response for the signer's certificate from the CA's
    responder, requested with the same nonce, so the KRS checks revocation itself
    without reaching the CA ("stapling").
A request for a person's whole key history (`recovery request --all-keys`) also
carries `older_keys`: the certificate and wrapped key of each older escrowed key, so
one quorum releases them all.
A fetch also carries `approvers`: each approving officer's certificate with a fresh
OCSP response for it, requested with the same nonce, so that the quorum is counted
again at fetch time from approvals whose officers are still valid and unrevoked.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

from mailpki.errors import InputError

Action = Literal["request", "approve", "fetch", "list", "report"]
ACTIONS: tuple[str, ...] = get_args(Action)
PROTOCOL = "mailpki-recovery/1"
MAX_MESSAGE_BYTES = 256 * 1024
_NONCE_RE = re.compile(r"[0-9a-f]{32}")
_REQUEST_ID_RE = re.compile(r"[0-9a-f]{32}")
MAX_APPROVERS = 32
# A key history: the newest key is the request's own target, these are the older ones.
MAX_OLDER_KEYS = 63
_MAIL_RE = re.compile(r"[^@\s,<>\"]{1,64}@[^@\s,<>\"]{1,255}")

# The body fields each action takes: name -> (type, required).
_BODIES: dict[str, dict[str, tuple[type, bool]]] = {
    "request": {
        "target_certificate": (str, True),
        "wrapped_key": (str, True),
        "reason": (str, True),
        "older_keys": (str, False),
    },
    "approve": {"request_id": (str, True)},
    "fetch": {"request_id": (str, True), "approvers": (str, False)},
    "list": {},
    "report": {"admin": (str, False), "since": (str, False)},
}


@dataclass(frozen=True)
class Message:
    action: Action
    service: str
    nonce: str
    time: datetime
    ocsp: bytes
    body: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "protocol": PROTOCOL,
                "action": self.action,
                "service": self.service,
                "nonce": self.nonce,
                "time": self.time.astimezone(UTC).isoformat(),
                "ocsp": base64.b64encode(self.ocsp).decode(),
                "body": self.body,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    def blob(self, name: str) -> bytes:
        """A base64 body field, decoded."""
        return b64decode(str(self.body[name]), name)

    def text(self, name: str) -> str | None:
        value = self.body.get(name)
        return None if value is None else str(value)

    @property
    def request_id(self) -> str:
        return check_request_id(str(self.body.get("request_id", "")))


@dataclass(frozen=True)
class ApproverStatus:
    """An approving officer's certificate and a stapled OCSP response for it (DER)."""

    certificate: bytes
    ocsp: bytes


def encode_approvers(statuses: list[ApproverStatus]) -> str:
    """`approvers` of a fetch: "CERT:OCSP" pairs in base64, comma-separated."""
    return ",".join(
        f"{base64.b64encode(s.certificate).decode()}:{base64.b64encode(s.ocsp).decode()}"
        for s in statuses
    )


def decode_approvers(text: str | None) -> list[ApproverStatus]:
    if not text:
        return []
    entries = text.split(",")
    if len(entries) > MAX_APPROVERS:
        raise InputError(f"'approvers' lists more than {MAX_APPROVERS} certificates")
    statuses = []
    for entry in entries:
        certificate, sep, ocsp = entry.partition(":")
        if not sep:
            raise InputError("'approvers' must be CERTIFICATE:OCSP pairs in base64")
        statuses.append(
            ApproverStatus(b64decode(certificate, "approvers"), b64decode(ocsp, "approvers"))
        )
    return statuses


@dataclass(frozen=True)
class EscrowedTarget:
    """One more key of a key-history request: its certificate and its wrapped key."""

    certificate: bytes
    wrapped_key: bytes


def encode_targets(targets: list[EscrowedTarget]) -> str:
    """`older_keys` of a request: "CERT:WRAPPED" pairs in base64, comma-separated."""
    return ",".join(
        f"{base64.b64encode(t.certificate).decode()}:{base64.b64encode(t.wrapped_key).decode()}"
        for t in targets
    )


def decode_targets(text: str | None) -> list[EscrowedTarget]:
    if not text:
        return []
    entries = text.split(",")
    if len(entries) > MAX_OLDER_KEYS:
        raise InputError(f"'older_keys' lists more than {MAX_OLDER_KEYS} keys")
    targets = []
    for entry in entries:
        certificate, sep, wrapped = entry.partition(":")
        if not sep:
            raise InputError("'older_keys' must be CERTIFICATE:WRAPPED_KEY pairs in base64")
        targets.append(
            EscrowedTarget(b64decode(certificate, "older_keys"), b64decode(wrapped, "older_keys"))
        )
    return targets


def new_nonce() -> str:
    return secrets.token_hex(16)


def b64decode(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InputError(f"'{name}' is not valid base64") from None


def check_request_id(value: str) -> str:
    if not _REQUEST_ID_RE.fullmatch(value):
        raise InputError(f"{value[:40]!r} is not a recovery request id (32 hex digits)")
    return value


def parse_message(data: bytes) -> Message:
    """A Message from the signed content; InputError names what is wrong."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise InputError("the recovery message is too large")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # also: ints past Python's digit limit, deep nesting
        raise InputError("the recovery message is not JSON") from None
    try:  # a lone surrogate ("\ud800") parses, but no comparison or store can encode it
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("the recovery message holds an unpaired surrogate") from None
    if not isinstance(raw, dict):
        raise InputError("the recovery message is not a JSON object")
    expected = {"protocol", "action", "service", "nonce", "time", "ocsp", "body"}
    if set(raw) != expected:
        raise InputError(f"the recovery message must have exactly the fields {sorted(expected)}")
    if raw["protocol"] != PROTOCOL:
        raise InputError(f"unsupported recovery protocol {str(raw['protocol'])[:40]!r}")
    action = raw["action"]
    if action not in ACTIONS:
        raise InputError(f"unknown recovery action {str(action)[:40]!r}")
    for name in ("service", "nonce", "time", "ocsp"):
        if not isinstance(raw[name], str):
            raise InputError(f"'{name}' must be a string")
    if not _NONCE_RE.fullmatch(raw["nonce"]):
        raise InputError("'nonce' must be 32 lowercase hex digits")
    try:
        time = datetime.fromisoformat(raw["time"])
    except ValueError:
        raise InputError("'time' is not an ISO 8601 time") from None
    if time.tzinfo is None:
        raise InputError("'time' must carry a UTC offset")
    body = raw["body"]
    if not isinstance(body, dict):
        raise InputError("'body' must be an object")
    spec = _BODIES[action]
    unknown = set(body) - set(spec)
    if unknown:
        raise InputError(f"unknown field(s) for {action}: {', '.join(sorted(unknown))}")
    for name, (kind, required) in spec.items():
        if name not in body or body[name] is None:
            if required:
                raise InputError(f"{action} needs '{name}'")
            continue
        if not isinstance(body[name], kind) or len(str(body[name])) > MAX_MESSAGE_BYTES:
            raise InputError(f"'{name}' must be a {kind.__name__}")
    if action in ("approve", "fetch"):
        check_request_id(str(body["request_id"]))
    if action == "fetch":
        decode_approvers(body.get("approvers"))
    if action == "request":
        decode_targets(body.get("older_keys"))
    if action == "request" and len(str(body["reason"])) > 500:
        raise InputError("'reason' is longer than 500 characters")
    if action == "report" and body.get("admin") and not _MAIL_RE.fullmatch(str(body["admin"])):
        raise InputError("'admin' must be a mail address")
    try:
        time = time.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise InputError("'time' is out of range") from None
    return Message(
        action=cast(Action, action),
        service=raw["service"],
        nonce=raw["nonce"],
        time=time,
        ocsp=b64decode(raw["ocsp"], "ocsp"),
        body=body,
    )
