"""The CA's checked settings and the URLs it puts into certificates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mailpki.policy.certificate import CertificateUrls

ROOT_CRL = "root.crl"
FULL_CRL = "issuing.crl"


# The issuing CA of generation 1 is "issuing"; each rollover adds "issuing-g2", "-g3"...
# The label names its key, its stored certificates (`issuer` column), its CRL files and
# its certificate file, so relying parties fetch the CRL of the CA that signed theirs.
_ISSUING_LABEL = re.compile(r"issuing(?:-g([2-9]|[1-9][0-9]{1,3}))?")
_CRL_NAME = re.compile(r"(issuing(?:-g(?:[2-9]|[1-9][0-9]{1,3}))?)(?:-(0|[1-9][0-9]{0,8}))?\.crl")


def issuing_label(generation: int) -> str:
    """The label of the issuing CA of a generation (1 is the one `init` made)."""
    if generation < 1:
        raise ValueError(f"an issuing CA generation starts at 1, not {generation}")
    return "issuing" if generation == 1 else f"issuing-g{generation}"


def is_issuing_label(label: str) -> bool:
    """Whether an `issuer` value names an issuing CA (of any generation)."""
    return _ISSUING_LABEL.fullmatch(label) is not None


def full_crl_name(label: str = "issuing") -> str:
    return f"{label}.crl"


def partition_crl_name(partition: int, label: str = "issuing") -> str:
    return f"{label}-{partition}.crl"


def crl_scope(name: str) -> tuple[str, int | None] | None:
    """(signing CA, partition) of a CRL file name; None for a name we never publish."""
    if name == ROOT_CRL:
        return "root", None
    match = _CRL_NAME.fullmatch(name)
    if match is None:
        return None
    return match.group(1), (int(match.group(2)) if match.group(2) is not None else None)


@dataclass(frozen=True)
class CASettings:
    base_url: str
    partition_size: int = 100_000
    crl_validity: timedelta = timedelta(days=7)
    root_crl_validity: timedelta = timedelta(days=365)
    ocsp_validity: timedelta = timedelta(hours=24)
    profile_dir: Path | None = None
    default_profile: str = "sponsored-multipurpose"

    def crl_url(self, name: str) -> str:
        return f"{self.base_url}/crl/{name}"

    @property
    def ocsp_url(self) -> str:
        return f"{self.base_url}/ocsp"

    def ca_cert_url(self, name: str) -> str:
        return f"{self.base_url}/ca/{name}"

    def urls_for_partition(self, partition: int, label: str = "issuing") -> CertificateUrls:
        """CDP and AIA of a certificate of the issuing CA `label`: its own CRL and
        certificate file, so each generation's certificates point at their issuer."""
        return CertificateUrls(
            crl=self.crl_url(partition_crl_name(partition, label)),
            ca_issuers=self.ca_cert_url(f"{label}.crt"),
            ocsp=self.ocsp_url,
        )

    def partition_of(self, reservation_id: int) -> int:
        """Certificates fill partitions in issue order, so no CRL grows without bound."""
        return (reservation_id - 1) // self.partition_size
