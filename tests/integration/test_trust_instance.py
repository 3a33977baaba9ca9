"""mailpki.smime.trust against a real instance: `mailpki ca issue`, `mailpki ca revoke`,
and the real OCSP responder and CRLs of `mailpki serve` in a separate process.

Issued certificates cannot name 127.0.0.1 in their AIA/CDP (the lint before signing
refuses internal names), so they keep the instance's public PKI URL and the fetch maps
that host to the served address, as a hosts-file entry would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from mailpki.smime.trust import (
    CertificateVerdict,
    Purpose,
    RevocationChecker,
    TrustAnchors,
    check_certificate,
    http_fetch,
)
from tests.integration.cli_helpers import mailpki, make_csr

pytestmark = pytest.mark.integration

PUBLIC = "http://pki.example.com"


def _issue(home: Path, tmp_path: Path, name: str) -> x509.Certificate:
    out = tmp_path / f"{name}.pem"
    result = mailpki(
        "ca", "issue", "--home", home, "--csr", make_csr(tmp_path, name),
        "--email", f"{name}@example.com", "--name", f"{name.title()} Smith", "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    return x509.load_pem_x509_certificate(out.read_bytes())


def test_good_then_revoked_through_the_real_ocsp_and_crl(
    sqlite_home: Path, tmp_path: Path, serve: Callable[[], str]
) -> None:
    home = sqlite_home
    assert mailpki("config", "set", "--home", home, "web.pki_base_url", PUBLIC).code == 0
    served = serve()
    fetched: list[str] = []

    def fetch(url: str, data: bytes | None, content_type: str) -> bytes:
        assert url.startswith(f"{PUBLIC}/"), url
        fetched.append(url)
        return http_fetch(url.replace(PUBLIC, served, 1), data, content_type, timeout=10)

    alice = _issue(home, tmp_path, "alice")
    aia = alice.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert any(d.access_location.value == f"{PUBLIC}/ocsp" for d in aia)
    anchors = TrustAnchors.from_pem_files([home / "ca" / "issuing.pem", home / "ca" / "root.pem"])
    assert len(anchors.roots) == 1 and len(anchors.intermediates) == 1

    def check(checker: RevocationChecker, purpose: Purpose = "sign") -> CertificateVerdict:
        return check_certificate(
            alice, anchors, purpose=purpose, address="Alice@Example.com",
            revocation=checker, require_revocation=True,
        )  # fmt: skip

    # Good, by OCSP (the leaf) and by the root's CRL (the issuing CA).
    cached = RevocationChecker(fetch=fetch)
    verdict = check(cached)
    assert verdict.problems == ()
    assert verdict.revocation == "good"
    assert verdict.revocation_source == f"ocsp {PUBLIC}/ocsp"
    assert verdict.chain[1:] == (anchors.intermediates[0], anchors.roots[0])
    assert fetched == [f"{PUBLIC}/ocsp", f"{PUBLIC}/crl/root.crl"]
    assert check(cached, "encrypt").valid
    assert len(fetched) == 2  # cached

    # Good by the CRL alone (the certificate's partition CRL).
    crl_only = RevocationChecker(fetch=fetch, use_ocsp=False)
    state, source = crl_only.status(alice, anchors.intermediates[0])
    assert state == "good" and source.startswith(f"crl {PUBLIC}/crl/issuing-")

    # Revoke it with the CLI.
    serial = format(alice.serial_number, "X")
    result = mailpki("ca", "revoke", "--home", home, serial, "--reason", "keyCompromise")
    assert result.code == 0, result.err

    # The cached answer stands until it expires...
    assert check(cached).revocation == "good"
    # ...a fresh checker sees the revocation over OCSP...
    verdict = check(RevocationChecker(fetch=fetch))
    assert verdict.revocation == "revoked"
    problems = verdict.problems
    assert len(problems) == 1 and problems[0].startswith(
        "the certificate was revoked (keyCompromise) on "
    )
    assert problems[0].endswith(f"(ocsp {PUBLIC}/ocsp)")
    # ...and in the (re-signed) CRL.
    fresh_crl = RevocationChecker(fetch=fetch, use_ocsp=False)
    result_crl = fresh_crl.check(alice, anchors.intermediates[0])
    assert result_crl.status == "revoked" and result_crl.reason == "keyCompromise"
    assert result_crl.source == source

    # A checker whose cache has expired (its clock moved past max_age) fetches again.
    offset = dt.timedelta(0)

    def clock() -> dt.datetime:
        return dt.datetime.now(dt.UTC) + offset

    expiring = RevocationChecker(fetch=fetch, clock=clock, max_age=dt.timedelta(minutes=1))
    bob = _issue(home, tmp_path, "bob")
    assert expiring.status(bob, anchors.intermediates[0])[0] == "good"
    result = mailpki(
        "ca", "revoke", "--home", home, format(bob.serial_number, "X"), "--reason", "superseded"
    )
    assert result.code == 0, result.err
    assert expiring.status(bob, anchors.intermediates[0])[0] == "good"  # cached
    offset = dt.timedelta(minutes=2)
    assert expiring.status(bob, anchors.intermediates[0]) == ("revoked", f"ocsp {PUBLIC}/ocsp")
