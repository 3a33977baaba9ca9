"""The in-process linter: finds what is wrong, refuses it, builds each validator once."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailpki.ca.lint import PKIX_ONLY, Finding, Linter
from mailpki.errors import InputError, LintError
from mailpki.policy.certificate import authority_key_identifier, key_usage
from mailpki.policy.profile import load_profile
from tests.unit.policy._chain import NOW, Chain, issue, make_chain, shared_linter


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _without_san(chain: Chain, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A mailbox certificate built by hand with no subjectAltName."""
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bob@example.com")]))
        .issuer_name(chain.issuing.subject)
        .public_key(key.public_key())
        .serial_number(0x7777_7777_7777_7777)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(frozenset({"digitalSignature"})), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(authority_key_identifier(chain.issuing), critical=False)
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.5.1.3"), None)]
            ),
            critical=False,
        )
        .sign(chain.issuing_key, hashes.SHA256())
    )
    return _der(cert)


def test_missing_san_found_and_refused(chain: Chain, key: ec.EllipticCurvePrivateKey) -> None:
    der = _without_san(chain, key)
    findings = shared_linter().lint(der, "MAILBOX-STRICT")
    codes = {f.code for f in findings}
    assert "cabf.smime.san_extension_missing" in codes
    assert all(
        isinstance(f, Finding) and f.severity in {"FATAL", "ERROR", "WARNING"} for f in findings
    )
    with pytest.raises(LintError) as info:
        shared_linter().check(der, "MAILBOX-STRICT")
    assert "cabf.smime.san_extension_missing" in str(info.value)
    assert any("san_extension_missing" in f for f in info.value.findings)
    assert len(info.value.findings) == len(findings)


def test_validity_900_days_found(chain: Chain, key: ec.EllipticCurvePrivateKey) -> None:
    # replace() skips the loader's 825-day check: this is the "profile bug" the linter catches.
    profile = dataclasses.replace(load_profile("mailbox-strict"), validity_days=900)
    der = _der(issue(chain, profile, key.public_key()))
    findings = shared_linter().lint(der, "MAILBOX-STRICT")
    assert [(f.severity, f.code) for f in findings] == [
        ("ERROR", "cabf.smime.certificate_validity_period_exceeds_825_days")
    ]
    assert findings[0].path == "certificate.tbsCertificate.validity.notBefore"
    with pytest.raises(LintError, match="certificate_validity_period_exceeds_825_days"):
        shared_linter().check(der, "MAILBOX-STRICT")
    # RFC 5280 alone sets no validity limit
    assert shared_linter().lint(der, None) == []


def test_validity_at_825_days_is_a_warning(chain: Chain, key: ec.EllipticCurvePrivateKey) -> None:
    profile = dataclasses.replace(load_profile("mailbox-strict"), validity_days=825)
    der = _der(issue(chain, profile, key.public_key()))
    codes = [f.code for f in shared_linter().lint(der, "MAILBOX-STRICT")]
    assert codes == ["cabf.smime.certificate_validity_period_at_maximum"]
    assert Linter("ERROR").lint(der, "MAILBOX-STRICT") == []


def test_wrong_lint_type_is_found(chain: Chain, key: ec.EllipticCurvePrivateKey) -> None:
    # A sponsored certificate linted as mailbox: O=, givenName etc. are prohibited there.
    der = _der(issue(chain, load_profile("sponsored-multipurpose"), key.public_key()))
    codes = {f.code for f in shared_linter().lint(der, "MAILBOX-STRICT")}
    assert "cabf.smime.prohibited_attribute" in codes


def test_validator_built_once(chain: Chain, key: ec.EllipticCurvePrivateKey) -> None:
    linter = Linter()
    der = _der(issue(chain, load_profile("sponsored-strict-signing"), key.public_key()))
    assert linter.cached_types() == frozenset()
    linter.lint(der, "SPONSORED-STRICT")
    entry = linter._entry("SPONSORED-STRICT")
    for _ in range(5):
        linter.lint(der, "sponsored-strict")  # case-insensitive, same cache entry
    # The same validator object serves every later lint (no timing: load varies).
    assert linter._entry("SPONSORED-STRICT") is entry
    assert linter.cached_types() == {"SPONSORED-STRICT"}
    linter.lint(der, None)
    assert linter.cached_types() == {"SPONSORED-STRICT", PKIX_ONLY}


def test_shared_across_threads(chain: Chain, key: ec.EllipticCurvePrivateKey) -> None:
    linter = Linter()
    good = _der(issue(chain, load_profile("mailbox-strict"), key.public_key()))
    bad = _without_san(chain, key)
    expected_bad = linter.lint(bad, "MAILBOX-STRICT")
    results: list[tuple[bool, list[Finding]]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for _ in range(10):
            use_bad = i % 2 == 1
            out = linter.lint(bad if use_bad else good, "MAILBOX-STRICT")
            with lock:
                results.append((use_bad, out))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40
    for use_bad, out in results:
        assert out == (expected_bad if use_bad else [])


def test_bad_threshold_and_type_and_der() -> None:
    with pytest.raises(InputError, match="threshold"):
        Linter("LOUD")
    assert Linter("notice").threshold == "NOTICE"
    with pytest.raises(InputError, match="unknown lint type"):
        shared_linter().lint(b"\x30\x00", "MAILBOX-SUPER")
    with pytest.raises(InputError, match="not valid DER"):
        shared_linter().lint(b"not a certificate", None)


def test_finding_str() -> None:
    f = Finding("ERROR", "cabf.x", "detail", "certificate.tbsCertificate")
    assert str(f) == "ERROR cabf.x: detail @ certificate.tbsCertificate"
    assert str(Finding("WARNING", "c", "", "p")) == "WARNING c @ p"
