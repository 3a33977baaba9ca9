"""Recovery messages: round trips, and every malformed input is an InputError."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailpki.errors import InputError
from mailpki.recovery.protocol import (
    ACTIONS,
    MAX_APPROVERS,
    MAX_MESSAGE_BYTES,
    MAX_OLDER_KEYS,
    PROTOCOL,
    ApproverStatus,
    EscrowedTarget,
    Message,
    check_request_id,
    decode_approvers,
    decode_targets,
    encode_approvers,
    encode_targets,
    new_nonce,
    parse_message,
)

NONCE = "0123456789abcdef0123456789abcdef"
REQUEST_ID = "fedcba9876543210fedcba9876543210"
TIME = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
OCSP = b"\x30\x03\x0a\x01\x00"

BODIES: dict[str, dict[str, Any]] = {
    "request": {
        "target_certificate": base64.b64encode(b"certificate DER").decode(),
        "wrapped_key": base64.b64encode(b"\x01" * 384).decode(),
        "reason": "left the company; legal hold on the mailbox",
    },
    "approve": {"request_id": REQUEST_ID},
    "fetch": {"request_id": REQUEST_ID},
    "list": {},
    "report": {"admin": "admin@example.com", "since": "2025-01-01T00:00:00+00:00"},
}


def valid(action: str = "approve", **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "protocol": PROTOCOL,
        "action": action,
        "service": "krs-1",
        "nonce": NONCE,
        "time": TIME.isoformat(),
        "ocsp": base64.b64encode(OCSP).decode(),
        "body": dict(BODIES[action]),
    }
    raw.update(changes)
    return raw


def encode(raw: object) -> bytes:
    return json.dumps(raw).encode()


def refused(raw: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_message(raw if isinstance(raw, bytes) else encode(raw))


def test_bodies_cover_every_action() -> None:
    assert set(BODIES) == set(ACTIONS)


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_round_trip(action: str) -> None:
    message = Message(action, "krs-1", NONCE, TIME, OCSP, dict(BODIES[action]))  # type: ignore[arg-type]
    parsed = parse_message(message.to_bytes())
    assert parsed == message
    assert parsed.to_bytes() == message.to_bytes()


def test_round_trip_keeps_the_instant_in_utc() -> None:
    local = TIME.astimezone(timezone(timedelta(hours=-5)))
    message = Message("list", "krs-1", new_nonce(), local, OCSP, {})
    parsed = parse_message(message.to_bytes())
    assert parsed.time == TIME and parsed.time.tzinfo == UTC
    # An offset written by another client is accepted and normalised too.
    parsed = parse_message(encode(valid("list", time="2025-03-04T06:06:07.89+01:00")))
    assert parsed.time == TIME and parsed.time.utcoffset() == timedelta(0)


def test_accessors() -> None:
    parsed = parse_message(encode(valid("request")))
    assert parsed.blob("wrapped_key") == b"\x01" * 384
    assert parsed.text("reason") == BODIES["request"]["reason"]
    assert parsed.text("absent") is None
    assert parse_message(encode(valid("fetch"))).request_id == REQUEST_ID
    # Optional report fields may be left out or null.
    assert parse_message(encode(valid("report", body={}))).body == {}
    assert parse_message(encode(valid("report", body={"admin": None}))).text("admin") is None


def test_new_nonce_is_accepted_and_fresh() -> None:
    nonces = {new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    for nonce in list(nonces)[:3]:
        assert parse_message(encode(valid(nonce=nonce))).nonce == nonce


# -- field by field -----------------------------------------------------------------------


def test_not_json_or_not_an_object() -> None:
    refused(b"\xff\xfe{}", "not JSON")
    refused(b"{'single': 'quotes'}", "not JSON")
    refused(b"", "not JSON")
    refused([valid()], "not a JSON object")
    refused("a string", "not a JSON object")
    refused(b"x" * (MAX_MESSAGE_BYTES + 1), "too large")


def test_exactly_the_top_level_fields() -> None:
    refused({**valid(), "extra": 1}, "exactly the fields")
    missing = valid()
    del missing["ocsp"]
    refused(missing, "exactly the fields")


def test_protocol_and_action() -> None:
    refused(valid(protocol="mailpki-recovery/2"), "unsupported recovery protocol")
    refused(valid(protocol=None), "unsupported recovery protocol")
    refused({**valid(), "action": "delete"}, "unknown recovery action")
    refused({**valid(), "action": "APPROVE"}, "unknown recovery action")
    refused({**valid(), "action": ["approve"]}, "unknown recovery action")


@pytest.mark.parametrize("name", ["service", "nonce", "time", "ocsp"])
@pytest.mark.parametrize("value", [None, 1, 1.5, True, [], {}])
def test_top_level_strings(name: str, value: object) -> None:
    refused(valid(**{name: value}), f"'{name}' must be a string")


@pytest.mark.parametrize(
    "nonce",
    ["", "0123", NONCE.upper(), NONCE + "0", NONCE[:-1] + "g", NONCE[:-1] + "\n", " " + NONCE[1:]],
)
def test_bad_nonce(nonce: str) -> None:
    refused(valid(nonce=nonce), "'nonce' must be 32 lowercase hex digits")


def test_time() -> None:
    refused(valid(time="yesterday"), "not an ISO 8601 time")
    refused(valid(time="2025-03-04T05:06:07"), "must carry a UTC offset")  # naive
    refused(valid(time="2025-03-04"), "must carry a UTC offset")
    # Offsets that push the instant past what a datetime holds.
    refused(valid(time="0001-01-01T00:00:00+01:00"), "out of range")
    refused(valid(time="9999-12-31T23:59:59-01:00"), "out of range")


def test_ocsp_must_be_base64() -> None:
    refused(valid(ocsp="not base64!"), "'ocsp' is not valid base64")
    refused(valid(ocsp="ä"), "'ocsp' is not valid base64")


def test_body_must_be_an_object_with_known_fields() -> None:
    refused(valid(body=[]), "'body' must be an object")
    refused(valid(body=None), "'body' must be an object")
    refused(valid("approve", body={"request_id": REQUEST_ID, "extra": 1}), "unknown field")
    refused(valid("list", body={"request_id": REQUEST_ID}), "unknown field")


@pytest.mark.parametrize("action", ["request", "approve", "fetch"])
def test_required_body_fields(action: str) -> None:
    for name in BODIES[action]:
        body = dict(BODIES[action])
        del body[name]
        refused(valid(action, body=body), f"{action} needs '{name}'")
        refused(valid(action, body={**BODIES[action], name: None}), f"{action} needs '{name}'")


@pytest.mark.parametrize("action", ["request", "approve", "fetch", "report"])
@pytest.mark.parametrize("value", [1, 2.5, False, ["x"], {"x": 1}])
def test_body_field_types(action: str, value: object) -> None:
    for name in BODIES[action]:
        refused(valid(action, body={**BODIES[action], name: value}), f"'{name}' must be a str")


@pytest.mark.parametrize("action", ["approve", "fetch"])
@pytest.mark.parametrize(
    "request_id", ["", "xyz", REQUEST_ID.upper(), REQUEST_ID + "0", REQUEST_ID[:-1] + "g"]
)
def test_request_id_must_be_hex(action: str, request_id: str) -> None:
    refused(valid(action, body={"request_id": request_id}), "not a recovery request id")
    with pytest.raises(InputError):
        check_request_id(request_id)


def test_fetch_approvers_round_trip() -> None:
    statuses = [ApproverStatus(b"cert one", b"ocsp one"), ApproverStatus(b"\x00" * 40, b"")]
    text = encode_approvers(statuses)
    parsed = parse_message(encode(valid("fetch", body={**BODIES["fetch"], "approvers": text})))
    assert decode_approvers(parsed.text("approvers")) == statuses
    assert decode_approvers(None) == decode_approvers("") == []
    # Optional: a fetch without it parses (the service then counts no approval).
    assert parse_message(encode(valid("fetch"))).text("approvers") is None


@pytest.mark.parametrize(
    ("approvers", "match"),
    [
        ("bm9jb2xvbg==", "CERTIFICATE:OCSP pairs"),
        ("%%%:AAAA", "'approvers' is not valid base64"),
        ("AAAA:%%%", "'approvers' is not valid base64"),
        ("AAAA:AAAA:AAAA", "'approvers' is not valid base64"),
        ("AAAA:AAAA,", "CERTIFICATE:OCSP pairs"),
        (",".join(["AAAA:AAAA"] * (MAX_APPROVERS + 1)), f"more than {MAX_APPROVERS}"),
        ("\u00e9:AAAA", "'approvers' is not valid base64"),
    ],
)
def test_fetch_approvers_that_do_not_parse(approvers: str, match: str) -> None:
    refused(valid("fetch", body={**BODIES["fetch"], "approvers": approvers}), match)
    with pytest.raises(InputError, match=match):
        decode_approvers(approvers)


def test_request_older_keys_round_trip() -> None:
    targets = [EscrowedTarget(b"old cert", b"\x02" * 384), EscrowedTarget(b"older", b"\x03")]
    body = {**BODIES["request"], "older_keys": encode_targets(targets)}
    parsed = parse_message(encode(valid("request", body=body)))
    assert decode_targets(parsed.text("older_keys")) == targets
    assert decode_targets(None) == decode_targets("") == []
    # Optional: a request for one key has none.
    assert parse_message(encode(valid("request"))).text("older_keys") is None


@pytest.mark.parametrize(
    ("older", "match"),
    [
        ("bm9jb2xvbg==", "CERTIFICATE:WRAPPED_KEY pairs"),
        ("%%%:AAAA", "'older_keys' is not valid base64"),
        ("AAAA:%%%", "'older_keys' is not valid base64"),
        ("AAAA:AAAA:AAAA", "'older_keys' is not valid base64"),
        ("AAAA:AAAA,", "CERTIFICATE:WRAPPED_KEY pairs"),
        (",".join(["AAAA:AAAA"] * (MAX_OLDER_KEYS + 1)), f"more than {MAX_OLDER_KEYS}"),
        ("\u00e9:AAAA", "'older_keys' is not valid base64"),
        (1, "'older_keys' must be a str"),
        (["AAAA:AAAA"], "'older_keys' must be a str"),
    ],
)
def test_request_older_keys_that_do_not_parse(older: object, match: str) -> None:
    refused(valid("request", body={**BODIES["request"], "older_keys": older}), match)
    if isinstance(older, str):
        with pytest.raises(InputError, match=match):
            decode_targets(older)


def test_older_keys_belong_to_a_request_only() -> None:
    refused(valid("approve", body={**BODIES["approve"], "older_keys": ""}), "unknown field")
    refused(valid("fetch", body={**BODIES["fetch"], "older_keys": ""}), "unknown field")


def test_approvers_belong_to_a_fetch_only() -> None:
    refused(
        valid("approve", body={**BODIES["approve"], "approvers": ""}),
        "unknown field",
    )


def test_reason_length() -> None:
    at_limit = {**BODIES["request"], "reason": "r" * 500}
    assert parse_message(encode(valid("request", body=at_limit))).text("reason") == "r" * 500
    over = {**BODIES["request"], "reason": "r" * 501}
    refused(valid("request", body=over), "longer than 500")


def test_report_admin_must_be_a_mail_address() -> None:
    for admin in ("admin", "a@b@c", "admin@", "two words@example.com"):
        refused(valid("report", body={"admin": admin}), "'admin' must be a mail address")


def test_unpaired_surrogates_are_refused() -> None:
    # Valid JSON escapes, but not text: no store or byte comparison can encode them.
    refused(encode(valid(service="\ud800")), "surrogate")
    refused(encode(valid("request", body={**BODIES["request"], "reason": "a\udfffb"})), "surrogate")


def test_resource_limits_are_input_errors() -> None:
    refused(b"[" * 100_000 + b"]" * 100_000, "not JSON")  # nesting past the recursion limit
    refused(b'{"protocol": ' + b"9" * 5000 + b"}", "not JSON")  # past int's digit limit


# -- fuzzing: a Message or an InputError, never anything else -----------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


def parses_or_refuses(data: bytes) -> Message | None:
    try:
        message = parse_message(data)
    except InputError:
        return None
    assert message.action in ACTIONS
    assert message.time.utcoffset() == timedelta(0)
    message.to_bytes()  # what was accepted can be written back
    return message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_fuzz_random_json_objects(raw: dict[str, Any]) -> None:
    parses_or_refuses(encode(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
@example(b"\x00")
@example(b"NaN")
@example(b'"\\ud800"')
def test_fuzz_random_bytes(data: bytes) -> None:
    parses_or_refuses(data)


TOP_LEVEL = sorted(valid())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    action=st.sampled_from(ACTIONS),
    field=st.sampled_from([*TOP_LEVEL, "body.*"]),
    how=st.sampled_from(["replace", "delete", "add"]),
    value=json_values,
    key=st.text(max_size=20),
)
def test_fuzz_mutations_of_valid_messages(
    action: str, field: str, how: str, value: Any, key: str
) -> None:
    raw = valid(action)
    target = raw["body"] if field == "body.*" else raw
    names = sorted(target) if field == "body.*" else [field]
    name = names[len(key) % len(names)] if names else key
    if how == "replace":
        target[name] = value
    elif how == "delete":
        target.pop(name, None)
    else:
        target[key] = value
    parses_or_refuses(encode(raw))


@settings(max_examples=300, deadline=None)
@given(action=st.sampled_from(ACTIONS), data=st.data())
def test_fuzz_byte_mutations_of_valid_messages(action: str, data: st.DataObject) -> None:
    wire = bytearray(Message(action, "krs-1", NONCE, TIME, OCSP, BODIES[action]).to_bytes())  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(wire) - 1))
        wire[index] = data.draw(st.integers(0, 255))
    parses_or_refuses(bytes(wire))
