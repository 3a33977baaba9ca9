"""The CA's checked settings and the URLs it puts into certificates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mailpki.policy.certificate import CertificateUrls

ROOT_CRL = "root.crl"
FULL_CRL = "issuing.crl"


_PARTITION_NAME = re.compile(r"issuing-(0|[1-9][0-9]{0,8})\.crl")


def partition_crl_name(partition: int) -> str:
    return f"issuing-{partition}.crl"


def crl_scope(name: str) -> tuple[str, int | None] | None:
    """(signing CA, partition) of a CRL file name; None for a name we never publish."""
    if name == ROOT_CRL:
        return "root", None
    if name == FULL_CRL:
        return "issuing", None
    match = _PARTITION_NAME.fullmatch(name)
    return ("issuing", int(match.group(1))) if match else None


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

    def urls_for_partition(self, partition: int) -> CertificateUrls:
        return CertificateUrls(
            crl=self.crl_url(partition_crl_name(partition)),
            ca_issuers=self.ca_cert_url("issuing.crt"),
            ocsp=self.ocsp_url,
        )

    def partition_of(self, reservation_id: int) -> int:
        """Certificates fill partitions in issue order, so no CRL grows without bound."""
        return (reservation_id - 1) // self.partition_size
