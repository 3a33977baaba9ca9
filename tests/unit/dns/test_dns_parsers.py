"""The parsers of outside input in mailpki.dns: TSIG key files, server addresses, mail
addresses turned into SMIMEA owner names, and DNS answers from a resolver."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import dns.flags
import dns.message
import dns.rdata
import dns.rdatatype
import dns.rrset
import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpki.dns import lookup as lookup_module
from mailpki.dns.lookup import DANE_EE, PKIX_EE, SmimeaLookup
from mailpki.dns.settings import ServerAddress, parse_server, parse_tsig_key
from mailpki.dns.smimea import in_zone, owner_name, record_for
from mailpki.errors import DnsError, DnsNotValidated, InputError, MailPKIError
from mailpki.smime.recipients import RecipientFinder, smimea_sources
from tests.fixtures.smime_pki import root_ca, smime_leaf

SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
GOOD = f'key "mailpki-update" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'


def test_a_tsig_keygen_file_is_read() -> None:
    key = parse_tsig_key(GOOD)
    assert (key.name, key.algorithm) == ("mailpki-update", "hmac-sha256")
    assert key.secret == b"0123456789abcdef0123456789abcdef"
    assert SECRET not in repr(key)
    assert parse_tsig_key("# made by tsig-keygen\n" + GOOD.replace("hmac-sha256", "HMAC-SHA512"))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "not one BIND key statement"),
        ("garbage", "not one BIND key statement"),
        (GOOD + GOOD, "not one BIND key statement"),
        (GOOD.replace("hmac-sha256", "hmac-md5"), "hmac-md5"),
        (GOOD.replace(SECRET, "not-base64!"), "not base64"),
        (GOOD.replace(SECRET, base64.b64encode(b"short").decode()), "shorter than 16"),
        (GOOD.replace("\tsecret", "\tsecret2"), "one algorithm and one secret"),
        (GOOD.replace(f'secret "{SECRET}";', ""), "both an algorithm and a secret"),
        (GOOD.replace("algorithm hmac-sha256;", "algorithm hmac-sha256; algorithm hmac-sha1;"),
         "no more"),
        ('key "a b" { algorithm hmac-sha256; secret "x"; };', "not one BIND key statement"),
    ],
)  # fmt: skip
def test_broken_key_files_are_refused_without_echoing_the_secret(text: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_tsig_key(text)
    assert words in str(caught.value)
    assert SECRET not in str(caught.value)


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_the_key_parser_raises_only_input_errors(text: str) -> None:
    with contextlib.suppress(InputError):
        parse_tsig_key(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1", ServerAddress("127.0.0.1", 53)),
        ("127.0.0.1:5353", ServerAddress("127.0.0.1", 5353)),
        ("[::1]:5353", ServerAddress("::1", 5353)),
        ("::1", ServerAddress("::1", 53)),
        (" 10.0.0.1 ", ServerAddress("10.0.0.1", 53)),
    ],
)
def test_server_addresses(value: str, expected: ServerAddress) -> None:
    assert parse_server(value) == expected
    assert parse_server(str(expected)) == expected


@pytest.mark.parametrize(
    "value", ["", "ns1.example.com", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x",
              "[::1", "[::1]x", "1.2.3.4:53:53", "[nothost]:53"],
)  # fmt: skip
def test_bad_server_addresses(value: str) -> None:
    with pytest.raises(InputError):
        parse_server(value)


@given(st.text(max_size=80))
def test_server_parser_raises_only_input_errors(value: str) -> None:
    with contextlib.suppress(InputError):
        parse_server(value)


def test_owner_name_follows_rfc_8162() -> None:
    # The example of RFC 8162 appendix A uses the local part "hugh".
    name = owner_name("hugh@example.com")
    digest = hashlib.sha256(b"hugh").hexdigest()[:56]
    assert name.to_text() == f"{digest}._smimecert.example.com."
    assert owner_name("Hugh@Example.COM") == name  # mailpki lower-cases the address
    assert in_zone("hugh@example.com", "example.com")
    assert in_zone("hugh@mail.example.com", "example.com.")
    assert not in_zone("hugh@example.org", "example.com")
    assert not in_zone("hugh@notexample.com", "example.com")


@pytest.mark.parametrize(
    "address", ["", "@example.com", "hugh@", "no-at", "a b@example.com", "a@exa mple.com",
                "a@" + "x" * 64 + ".com", "a@" + ".".join(["abcdefghi"] * 40)],
)  # fmt: skip
def test_owner_name_refuses_what_is_not_an_address(address: str) -> None:
    with pytest.raises(InputError):
        owner_name(address)


@given(st.text(max_size=120))
@settings(max_examples=300)
def test_owner_name_raises_only_input_errors(address: str) -> None:
    with contextlib.suppress(InputError):
        owner_name(address)


def test_record_zone_line() -> None:
    cert, _ = root_ca("Test Root")
    record = record_for("alice@example.com", cert, ttl=600)
    line = record.zone_line()
    assert line.startswith(owner_name("alice@example.com").to_text() + " 600 IN SMIMEA 3 0 0 ")
    assert "\n" not in line


# -- answers from the resolver -------------------------------------------------------------------


class _Answer:
    def __init__(self, response: dns.message.Message) -> None:
        self.response = response

    def __call__(self, query: dns.message.Message, *args: object, **kwargs: object):
        self.response.id = query.id
        return self.response


def _response(address: str, *, ad: bool, rdata_text: str, rcode: int = 0) -> dns.message.Message:
    query = dns.message.make_query(owner_name(address), dns.rdatatype.SMIMEA, want_dnssec=True)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if ad:
        response.flags |= dns.flags.AD
    if rdata_text:
        response.answer.append(
            dns.rrset.from_text(owner_name(address), 300, "IN", "SMIMEA", rdata_text)
        )
    return response


def _lookup(monkeypatch: pytest.MonkeyPatch, response: dns.message.Message) -> SmimeaLookup:
    monkeypatch.setattr(lookup_module.dns.query, "udp", _Answer(response))
    return SmimeaLookup(ServerAddress("127.0.0.1", 5353))


def test_only_validated_answers_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    cert, _ = root_ca("Test Root")
    data = record_for("alice@example.com", cert, ttl=60).rdata.to_text()
    found = _lookup(monkeypatch, _response("alice@example.com", ad=True, rdata_text=data))
    assert found.certificates("alice@example.com") == [cert]
    refused = _lookup(monkeypatch, _response("alice@example.com", ad=False, rdata_text=data))
    with pytest.raises(DnsNotValidated, match="not DNSSEC-validated"):
        refused.certificates("alice@example.com")


@pytest.mark.parametrize(
    "rdata_text",
    ["3 1 1 " + "ab" * 32, "0 0 0 3082", "3 0 0 00", "3 0 0 " + "30" * 40],  # hash, CA, junk
)
def test_records_without_a_usable_certificate_are_skipped(
    monkeypatch: pytest.MonkeyPatch, rdata_text: str
) -> None:
    lookup = _lookup(monkeypatch, _response("bob@example.com", ad=True, rdata_text=rdata_text))
    assert lookup.certificates("bob@example.com") == []


def test_a_failing_resolver_is_a_dns_error(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = _lookup(monkeypatch, _response("bob@example.com", ad=False, rdata_text="", rcode=2))
    with pytest.raises(DnsError, match="SERVFAIL"):
        lookup.certificates("bob@example.com")


@given(st.binary(max_size=600))
@settings(max_examples=200)
def test_garbage_certificates_in_a_validated_answer_never_crash(blob: bytes) -> None:
    address = "carol@example.com"
    response = _response(address, ad=True, rdata_text="3 0 0 " + (blob.hex() or "00"))
    with pytest.MonkeyPatch.context() as patch:
        lookup = _lookup(patch, response)
        with contextlib.suppress(MailPKIError):
            lookup.certificates(address)


def test_usages_are_kept_apart_and_one_query_serves_both(monkeypatch: pytest.MonkeyPatch) -> None:
    dane, _ = root_ca("DANE")
    pkix, _ = root_ca("PKIX")
    text = [
        record_for("dan@example.com", dane, ttl=60).rdata.to_text(),
        "1" + record_for("dan@example.com", pkix, ttl=60).rdata.to_text()[1:],
    ]
    response = _response("dan@example.com", ad=True, rdata_text=text[0])
    response.answer[0].add(dns.rdata.from_text("IN", "SMIMEA", text[1]), 60)
    answer = _Answer(response)
    calls: list[int] = []

    def counting(query: dns.message.Message, *args: object, **kwargs: object):
        calls.append(1)
        return answer(query)

    monkeypatch.setattr(lookup_module.dns.query, "udp", counting)
    lookup = SmimeaLookup(ServerAddress("127.0.0.1", 5353))
    assert lookup.certificates("dan@example.com", usages=(DANE_EE,)) == [dane]
    assert lookup.certificates("Dan@example.com", usages=(PKIX_EE,)) == [pkix]
    assert len(calls) == 1


def test_a_pkix_ee_record_still_needs_a_trusted_chain() -> None:
    root, root_key = root_ca("Foreign Root")
    leaf, _ = smime_leaf(root, root_key, mail="pat@example.com", name="Pat")

    class Fixed(SmimeaLookup):
        def _query(self, address: str) -> list[tuple[int, x509.Certificate]]:
            return [(self.usage, leaf)]

    for usage, found in ((DANE_EE, True), (PKIX_EE, False)):
        lookup = Fixed(ServerAddress("127.0.0.1"))
        lookup.usage = usage  # type: ignore[attr-defined]
        finder = RecipientFinder(smimea_sources(lookup), anchors=None)
        if found:
            assert finder.find("pat@example.com").certificate == leaf
        else:
            with pytest.raises(MailPKIError, match="no usable certificate"):
                finder.find("pat@example.com")
