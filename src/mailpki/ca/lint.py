"""pkilint in process: the CA signs only what has been linted.

Building a pkilint validator costs ~200 ms and linting with it ~4.5 ms, so each
validator is built once per lint type and kept for the life of the `Linter`.

Thread safety: one `Linter` may be shared by every thread of a process. Building is
guarded by a lock (so a validator is built once), and each validator has its own
lock held while it runs, because pkilint validators are plain objects with no
promise of being re-entrant. Different lint types lint in parallel.

pkilint is imported when a Linter is made, not with this module: it takes ~0.6 s, and
most commands (the S/MIME toolkit, listings) never lint.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from mailpki.errors import InputError, LintError

PKIX_ONLY = "RFC5280"  # cache key for lint_type None


@dataclass(frozen=True)
class Finding:
    """One pkilint finding, flattened to strings."""

    severity: str  # "FATAL" | "ERROR" | "WARNING" | "NOTICE" | "INFO" | "DEBUG"
    code: str  # e.g. "cabf.smime.prohibited_attribute"
    message: str  # pkilint's detail, or "" when it has none
    path: str  # the ASN.1 node, e.g. "certificate.tbsCertificate.subject"

    def __str__(self) -> str:
        detail = f": {self.message}" if self.message else ""
        return f"{self.severity} {self.code}{detail} @ {self.path}"


class _Entry:
    """A built validator and the lock that serialises its use."""

    __slots__ = ("lock", "validator")

    def __init__(self, validator: Any) -> None:
        self.validator = validator
        self.lock = threading.Lock()


class Linter:
    """Lints DER certificates with pkilint; validators are built once and reused."""

    def __init__(self, threshold: str = "WARNING") -> None:
        from pkilint import loader
        from pkilint.validation import ValidationFindingSeverity

        try:
            self._threshold = ValidationFindingSeverity[threshold.upper()]
        except (KeyError, AttributeError) as exc:
            names = ", ".join(s.name for s in ValidationFindingSeverity)
            raise InputError(f"lint threshold {threshold!r} is not one of {names}") from exc
        self._loader = loader.RFC5280CertificateDocumentLoader()
        self._cache: dict[str, _Entry] = {}
        self._build_lock = threading.Lock()

    @property
    def threshold(self) -> str:
        return str(self._threshold.name)

    def cached_types(self) -> frozenset[str]:
        """Lint types whose validator has been built (PKIX_ONLY for RFC 5280 only)."""
        with self._build_lock:
            return frozenset(self._cache)

    def lint(self, certificate_der: bytes, lint_type: str | None) -> list[Finding]:
        """Findings at the threshold or worse (FATAL=0, so lower is worse)."""
        entry = self._entry(lint_type)
        try:
            document = self._loader.load_der_document(certificate_der, "certificate")
        except Exception as exc:  # pyasn1 raises a zoo of types on bad DER
            raise InputError(f"certificate is not valid DER: {exc}") from exc
        with entry.lock:
            results = entry.validator.validate(document.root)
        findings: list[Finding] = []
        for result in results:
            for description in result.finding_descriptions:
                severity = description.finding.severity
                if severity <= self._threshold:
                    findings.append(
                        Finding(
                            severity=severity.name,
                            code=str(description.finding.code),
                            message=str(description.message or ""),
                            path=str(result.node.path),
                        )
                    )
        return findings

    def check(self, certificate_der: bytes, lint_type: str | None) -> None:
        """Raise LintError naming every finding; return quietly when there are none."""
        findings = self.lint(certificate_der, lint_type)
        if findings:
            listed = "; ".join(str(f) for f in findings)
            kind = lint_type or "RFC 5280"
            raise LintError(
                f"certificate refused: {len(findings)} lint finding(s) against {kind} "
                f"at {self._threshold.name} or worse: {listed}",
                findings=[str(f) for f in findings],
            )

    def prepare(self, lint_type: str | None) -> None:
        """Build the validator now (pkilint takes ~0.6 s), not in the first request."""
        self._entry(lint_type)

    def _entry(self, lint_type: str | None) -> _Entry:
        key = PKIX_ONLY if lint_type is None else lint_type.upper()
        with self._build_lock:
            entry = self._cache.get(key)
            if entry is None:
                entry = _Entry(_build(key))
                self._cache[key] = entry
            return entry


def _build(key: str) -> Any:
    """Build a validator the way pkilint's own CLIs do."""
    from pkilint.cabf import smime
    from pkilint.cabf.smime import smime_constants
    from pkilint.pkix import certificate, extension, name

    if key == PKIX_ONLY:
        # As bin/lint_pkix_cert.py: RFC 5280 structure and extension rules only.
        return certificate.create_pkix_certificate_validator_container(
            certificate.create_decoding_validators(
                name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
            ),
            [
                certificate.create_issuer_validator_container([]),
                certificate.create_validity_validator_container(),
                certificate.create_subject_validator_container([]),
                certificate.create_extensions_validator_container([]),
                certificate.create_spki_validator_container([]),
            ],
        )
    # As bin/lint_cabf_smime_cert.py -t LEVEL-GENERATION.
    level_name, _, generation_name = key.partition("-")
    try:
        level = smime_constants.ValidationLevel[level_name]
        generation = smime_constants.Generation[generation_name]
    except KeyError as exc:
        known = ", ".join(
            f"{v.name}-{g.name}"
            for v in smime_constants.ValidationLevel
            for g in smime_constants.Generation
        )
        raise InputError(f"unknown lint type {key!r}; known: {known}") from exc
    return certificate.create_pkix_certificate_validator_container(
        smime.create_decoding_validators(),
        smime.create_subscriber_validators(level, generation),
    )
