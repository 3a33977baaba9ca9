"""The one error root of mailpki and the tree below it.

Every error carries a message a person can act on; the CLI prints it on one line
and exits non-zero. Library code raises these and nothing broader.
"""

from __future__ import annotations


class MailPKIError(Exception):
    """Root of every error mailpki raises on purpose."""

    exit_code = 1


class ConfigError(MailPKIError):
    """The instance configuration is missing, malformed or has an unknown key/value."""


class InstanceError(MailPKIError):
    """The instance home is missing, already initialised, or inconsistent."""


class InputError(MailPKIError):
    """Outside input (a file, a CSR, a request body, a form field) is malformed."""

    exit_code = 2


class CSRError(InputError):
    """A certificate signing request cannot be parsed or its self-signature is wrong."""


class KeyPolicyError(InputError):
    """A public key is weak or of a type the profile does not allow."""


class ProfileError(MailPKIError):
    """A certificate profile is unknown or its data file is invalid."""


class LintError(MailPKIError):
    """A to-be-signed certificate has lint findings; issuance was refused."""

    def __init__(self, message: str, findings: list[str] | None = None) -> None:
        super().__init__(message)
        self.findings = findings or []


class KeyStoreError(MailPKIError):
    """A CA key cannot be created, loaded, unlocked or used (file or PKCS#11)."""


class CAError(MailPKIError):
    """The CA cannot perform the operation (missing key, bad state, token reuse)."""


class NotFoundError(MailPKIError):
    """The named object (certificate, serial, CRL) does not exist."""

    exit_code = 3


class RevocationError(MailPKIError):
    """A revocation request is invalid (already revoked, unknown reason)."""


class RenewalRefused(MailPKIError):
    """A certificate cannot be renewed (already renewed, revoked, expired)."""


class AuditError(MailPKIError):
    """The audit log could not be written; the action it guards did not happen."""


class AuditUnavailable(AuditError):
    """The database did not answer while an audit record was written (a restart, a
    failover): nothing was recorded and the action did not happen; trying again later
    may succeed."""


class AuditIntegrityError(AuditError):
    """The audit log has been tampered with (deleted, modified, inserted, reordered)."""


class StoreError(MailPKIError):
    """The database cannot be reached, migrated, or rejected a write."""


class CMSError(InputError):
    """A CMS message is malformed, its signature does not verify, or its signer is unusable."""


class PKCS12Error(InputError):
    """A PKCS#12 file cannot be read: wrong password, damaged, or without key and certificate."""


class EscrowError(MailPKIError):
    """A private key could not be escrowed (or a recovery block opened); no key was delivered."""


class RecoveryError(MailPKIError):
    """The Key Recovery Service cannot be reached or answered with something unusable."""


class RecoveryRefused(RecoveryError):
    """The Key Recovery Service refused a request (signature, role, replay, quorum, hold...)."""

    exit_code = 4


class MailError(MailPKIError):
    """A notice or alert could not be handed to the mail transport (it stays queued)."""


class DirectoryError(MailPKIError):
    """A directory cannot be reached, timed out, or refused the service account."""


class DirectoryUnavailable(DirectoryError):
    """The directory itself failed (unreachable, timed out, service account refused):
    every other request to it now would fail the same way, unlike an error about one
    entry (an ambiguous mail, a refused write)."""


class AuthenticationError(MailPKIError):
    """A logon was refused (wrong password or PIN, unknown user, locked out, disabled)."""

    exit_code = 4


class UnknownRealm(AuthenticationError):
    """A Kerberos principal's realm is mapped to no directory."""


class DnsError(MailPKIError):
    """A DNS update was refused (TSIG key, policy) or a DNS answer is unusable."""


class DnsUnavailable(DnsError):
    """The DNS server did not answer (down, timed out, unreachable): the update stays
    queued and is retried."""


class DnsNotValidated(DnsError):
    """A DNS answer was not DNSSEC-validated (no AD bit from a validating resolver), so
    nothing in it is trusted."""
