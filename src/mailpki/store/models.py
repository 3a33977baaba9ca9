"""SQLAlchemy models. Serial numbers are stored as lowercase hex without leading zeros."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, always UTC and always zone-aware in Python.

    SQLite keeps no zone and hands back naive values; PostgreSQL hands back the session's
    zone. Converting here, once, spares every reader its own "naive means UTC" fix. A
    naive value written is refused: it would be ambiguous."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"a naive datetime cannot be stored: {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class SerialReservation(Base):
    """A serial number persisted (committed) before anything is signed with it."""

    __tablename__ = "serials"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    issuer: Mapped[str] = mapped_column(String(32), nullable=False)
    reserved_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class CertificateRecord(Base):
    __tablename__ = "certificates"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    serial: Mapped[str] = mapped_column(
        String(64), ForeignKey("serials.serial"), unique=True, nullable=False
    )
    # Which CA signed it: "root" or "issuing".
    issuer: Mapped[str] = mapped_column(String(32), nullable=False)
    subject: Mapped[str] = mapped_column(Text, nullable=False)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    profile: Mapped[str] = mapped_column(String(64), nullable=False)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    der: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # "valid" or "revoked"; expiry is derived from not_after, never stored.
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="valid")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    crl_partition: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # The DER of this certificate's CRL entry, encoded once when it is revoked: a CRL
    # run concatenates these bytes. NULL for rows revoked before it existed (encoded
    # once, on the next CRL run).
    crl_entry_der: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Renewal: the serial of the certificate that replaced this one. A superseded
    # certificate stays valid (old mail stays readable, old signatures verify) but is
    # no longer published, renewed or noticed.
    superseded_by: Mapped[str | None] = mapped_column(String(64), index=True)
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # CRL building and the "revoked since the last CRL?" check are index seeks, even
    # with a million revoked rows.
    __table_args__ = (
        Index("ix_certificates_partition_revoked", "crl_partition", "status", "revoked_at"),
        Index("ix_certificates_issuer_revoked", "issuer", "status", "revoked_at"),
        # Mail addresses keep their case (the local part may be case-sensitive); lookups
        # by address ignore it, through this expression index.
        Index("ix_certificates_email_lower", func.lower(email)),
        # The lifecycle's "what expires soon / what expired" is a range seek.
        Index("ix_certificates_status_not_after", "status", "not_after"),
        # Counting the subscribers' certificates (the API's and the console's list
        # totals) reads this index instead of every row with its DER.
        Index("ix_certificates_issuer_profile", "issuer", "profile"),
    )


class LifecycleMark(Base):
    """Something the lifecycle did once and must not do again, on any node: an expiry
    notice per certificate and threshold ("notice-30", serial), the officers' daily
    summary ("summary", date), a person seen in the directory ("seen", mail), an expired
    certificate withdrawn ("expired", serial). The unique constraint is the guard: of
    two nodes inserting the same mark, one wins and only that one sends the mail."""

    __tablename__ = "lifecycle_marks"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    subject: Mapped[str] = mapped_column(String(320), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (UniqueConstraint("kind", "subject", name="uq_lifecycle_marks"),)


class CRLRecord(Base):
    """The latest signed CRL of one scope ("full", "p<N>", "root")."""

    __tablename__ = "crls"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, nullable=False)
    this_update: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    next_update: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    der: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class OCSPResponseRecord(Base):
    """The pre-signed OCSP response (SHA-1 CertID, no nonce) of one issued certificate.

    Refreshed ahead of its next_update by any server, and at once on revocation;
    every server loads what changed into its memory (see ca/presigned.py)."""

    __tablename__ = "ocsp_responses"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # "good" / "revoked"
    this_update: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    next_update: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    der: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class AuditRecord(Base):
    """One link of the hash chain: hash = H(prev_hash, seq, time, event, actor, data)."""

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[str] = mapped_column(String(40), nullable=False)
    event: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(320), nullable=False)
    data: Mapped[str] = mapped_column(Text, nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditHead(Base):
    """Single row (id=1) locked by every appender so the chain stays linear."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditCheckpoint(Base):
    """A signature by the audit key over (seq, hash) of one record: seals all before it."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    time: Mapped[str] = mapped_column(String(40), nullable=False)
    signature: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # ML-DSA-65 over the same payload; empty on checkpoints written before the upgrade.
    pq_signature: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


# -- Key Manager (instance database) ------------------------------------------------------


class EscrowedKey(Base):
    """The key recovery block of one delivered (or about to be delivered) private key.

    Written in the same transaction as the certificate; `state` goes pending -> delivered
    once the PKCS#12 is handed out, or pending -> revoked if delivery never finished.
    """

    __tablename__ = "escrowed_keys"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    serial: Mapped[str] = mapped_column(
        String(64), ForeignKey("certificates.serial"), unique=True, nullable=False
    )
    owner_email: Mapped[str] = mapped_column(String(320), nullable=False, index=True)
    key_type: Mapped[str] = mapped_column(String(16), nullable=False)
    spki_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    krs_key_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    oaep_hash: Mapped[str] = mapped_column(String(16), nullable=False)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    nonce: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # How `wrapped_key` is made: "rsa-oaep" or "hybrid-mlkem768" (keystore/hybrid_wrap.py).
    wrap: Mapped[str] = mapped_column(String(32), nullable=False, server_default="rsa-oaep")
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_escrowed_keys_state_lease", "state", "lease_until"),)


class PooledKey(Base):
    """A pre-generated key pair, already escrowed, waiting for an enrollment.

    The private key is kept twice: in the recovery block (only the KRS can open it) and
    under the instance's pool key (so the Key Manager can deliver it). Taking a key
    deletes its row (in a transaction of its own): a key is handed out at most once.
    """

    __tablename__ = "key_pool"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key_type: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    spki_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    krs_key_id: Mapped[str] = mapped_column(String(64), nullable=False)
    oaep_hash: Mapped[str] = mapped_column(String(16), nullable=False)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    nonce: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    wrap: Mapped[str] = mapped_column(String(32), nullable=False, server_default="rsa-oaep")
    local_nonce: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    local_ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class OutboxMessage(Base):
    """A mail to send (subscriber notice, recovery alert), queued in the transaction of
    the event it reports, so a notice is never lost when the mail server is down."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    recipient: Mapped[str] = mapped_column(String(320), nullable=False)
    subject: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    # An HTML alternative of `body`, for mails people read (invitations); optional.
    html_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set while one sender delivers it, so two nodes never send the same mail twice.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


# -- Key Recovery Service (its own database) ---------------------------------------------


class RecoveryRequestRecord(Base):
    """One signed recovery request and where it stands."""

    __tablename__ = "krs_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # pending -> approved -> recovered, or refused / held on the way.
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    requester_email: Mapped[str] = mapped_column(String(320), nullable=False, index=True)
    requester_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    requester_cert: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    target_email: Mapped[str] = mapped_column(String(320), nullable=False, index=True)
    target_serial: Mapped[str] = mapped_column(String(64), nullable=False)
    target_cert: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    recovered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    # How many keys one fetch releases: 1, or the whole key history of the person
    # (`target_*` is the newest; the older ones are RecoveryRequestKey rows). The
    # anomaly rules count keys, not requests.
    key_count: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")


class RecoveryRequestKey(Base):
    """One older key of a key-history request (`recovery request --all-keys`)."""

    __tablename__ = "krs_request_keys"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("krs_requests.id"), nullable=False, index=True
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)  # 1 = next to newest
    target_serial: Mapped[str] = mapped_column(String(64), nullable=False)
    target_cert: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)

    __table_args__ = (
        UniqueConstraint("request_id", "position", name="uq_krs_request_keys_position"),
    )


class RecoveryApprovalRecord(Base):
    """One officer's signed approval of one request; an officer counts once."""

    __tablename__ = "krs_approvals"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("krs_requests.id"), nullable=False, index=True
    )
    officer_email: Mapped[str] = mapped_column(String(320), nullable=False)
    officer_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (
        UniqueConstraint("request_id", "officer_email", name="uq_krs_approvals_officer"),
    )


class SeenNonce(Base):
    """Nonces of signed messages already accepted: a replay hits the primary key."""

    __tablename__ = "krs_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


class RecoveryAlert(Base):
    """An anomaly alert sent to a second contact; `holds` blocks recoveries until confirmed."""

    __tablename__ = "krs_alerts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    rule: Mapped[str] = mapped_column(String(64), nullable=False)
    # The admin the rule counted ("*" for rules over everyone): one alert per rule,
    # subject and window, so a confirmed alert does not fire again at once.
    subject: Mapped[str] = mapped_column(String(320), nullable=False)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    request_id: Mapped[str] = mapped_column(String(32), nullable=False)
    contact: Mapped[str] = mapped_column(String(320), nullable=False)
    token_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    holds: Mapped[bool] = mapped_column(Boolean, nullable=False)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WitnessedInstance(Base):
    """An instance whose audit checkpoints this recovery service witnesses.

    Pinned by the first checkpoint it hands in: `id` is the SHA-256 of its ECDSA audit
    public key, and later checkpoints must verify with these keys.
    """

    __tablename__ = "krs_witnessed_instances"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    audit_key: Mapped[str] = mapped_column(Text, nullable=False)
    mldsa_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class WitnessedCheckpoint(Base):
    """One checkpoint of an instance's audit log, as handed to and countersigned here."""

    __tablename__ = "krs_witnessed_checkpoints"

    instance_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("krs_witnessed_instances.id"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    time: Mapped[str] = mapped_column(String(40), nullable=False)
    signature: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    pq_signature: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    received_at: Mapped[str] = mapped_column(String(40), nullable=False)
    countersignature: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


# -- Directories, authentication, approval (instance database) ----------------------------


class DirectoryConfig(Base):
    """One configured LDAP directory (OpenLDAP or Active Directory); none = embedded."""

    __tablename__ = "directories"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    flavour: Mapped[str] = mapped_column(String(16), nullable=False)
    url: Mapped[str] = mapped_column(String(400), nullable=False)
    base_dn: Mapped[str] = mapped_column(Text, nullable=False)
    bind_dn: Mapped[str] = mapped_column(Text, nullable=False)
    # A path: the service account's password lives in a file, never in the database.
    bind_password_file: Mapped[str] = mapped_column(Text, nullable=False)
    domains: Mapped[str] = mapped_column(Text, nullable=False)  # comma-separated
    netbios_domain: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    starttls: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    ca_file: Mapped[str] = mapped_column(Text, nullable=False, default="")
    timeout_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=5)
    mapping: Mapped[str] = mapped_column(Text, nullable=False, default="{}")  # JSON overrides
    # Kerberos principals of this realm are looked up here ("" = none).
    kerberos_realm: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class EmbeddedEntry(Base):
    """A person in the embedded directory (imported from CSV or LDIF)."""

    __tablename__ = "directory_entries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    login: Mapped[str] = mapped_column(String(256), unique=True, nullable=False)
    dn: Mapped[str] = mapped_column(String(512), unique=True, nullable=False)
    mail: Mapped[str | None] = mapped_column(String(320), index=True)
    display_name: Mapped[str | None] = mapped_column(String(256), index=True)
    given_name: Mapped[str | None] = mapped_column(String(128))
    surname: Mapped[str | None] = mapped_column(String(128))
    organisation: Mapped[str | None] = mapped_column(String(256))
    site: Mapped[str | None] = mapped_column(String(256))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    groups: Mapped[str] = mapped_column(Text, nullable=False, default="[]")  # JSON list
    employee_id: Mapped[str | None] = mapped_column(String(64), index=True)


class EmbeddedCertificate(Base):
    """A certificate published in the embedded directory."""

    __tablename__ = "directory_certificates"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    entry_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("directory_entries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    der: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)

    __table_args__ = (UniqueConstraint("entry_id", "fingerprint", name="uq_directory_cert"),)


class PublishJob(Base):
    """Publish or unpublish one certificate: queued in the transaction of the issue or
    revocation, delivered by a worker with retry and backoff (a directory outage loses
    nothing)."""

    __tablename__ = "publish_queue"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    action: Mapped[str] = mapped_column(String(16), nullable=False)  # publish | unpublish
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_publish_queue_due", "done_at", "next_attempt_at"),)


class HRPin(Base):
    """A one-time enrollment PIN from the HR list; only its argon2 hash is stored."""

    __tablename__ = "hr_pins"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    employee_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    mail: Mapped[str] = mapped_column(String(320), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    pin_hash: Mapped[str] = mapped_column(String(200), nullable=False)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class AuthFailure(Base):
    """Failed logons per key (login, or login+source): lockout after too many."""

    __tablename__ = "auth_failures"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False)
    first_failure_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EnrollmentRequestRecord(Base):
    """A request that the approval rules did not approve: it waits for an officer."""

    __tablename__ = "enrollment_requests"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    login: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    directory: Mapped[str] = mapped_column(String(64), nullable=False)
    mail: Mapped[str | None] = mapped_column(String(320))
    entry: Mapped[str] = mapped_column(Text, nullable=False)  # JSON of the DirectoryEntry
    # pending -> approved -> enrolled, or rejected
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    reasons: Mapped[str] = mapped_column(Text, nullable=False)  # JSON list
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(320))
    note: Mapped[str | None] = mapped_column(Text)


class Invitation(Base):
    """An enrollment invitation: a signed, expiring, one-time link mailed to a person.

    Only the SHA-256 of the link's token is stored; the token itself is in the mail."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    login: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    directory: Mapped[str] = mapped_column(String(64), nullable=False)
    mail: Mapped[str] = mapped_column(String(320), nullable=False)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PortalSession(Base):
    """A portal session, server side: the cookie holds a random id, only its SHA-256 is
    stored here (a copy of the database opens no session). Any node can serve it."""

    __tablename__ = "portal_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[str] = mapped_column(Text, nullable=False)  # JSON: csrf, identity, state
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    # Set while an enrollment runs for this session: a second submit (a double click,
    # another node) finds it taken and does not issue a second certificate.
    busy_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PortalDownload(Base):
    """A PKCS#12 waiting for its one download: encrypted with the instance's at-rest key,
    bound to the session that made it, usable once, until it expires."""

    __tablename__ = "portal_downloads"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    serial: Mapped[str] = mapped_column(String(64), nullable=False)
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    filename: Mapped[str] = mapped_column(String(200), nullable=False)
    blob: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class JobLease(Base):
    """Which node runs a background job now: one row per job, taken when free or expired
    and renewed while held, so each job runs on one node of a cluster at a time and a
    dead node's jobs pass to another once its lease runs out."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200), nullable=False)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    runs: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class ApiToken(Base):
    """A bearer token of the JSON API: only its SHA-256 is stored; the token itself is
    shown once, when it is created."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(String(320), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OidcProviderConfig(Base):
    """One OpenID Connect provider people may log on with (mailpki auth oidc add)."""

    __tablename__ = "oidc_providers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(400), nullable=False)
    client_id: Mapped[str] = mapped_column(String(400), nullable=False)
    # A path: the client secret lives in a file, never in the database.
    client_secret_file: Mapped[str] = mapped_column(Text, nullable=False)
    claim_mail: Mapped[str] = mapped_column(String(64), nullable=False)
    claim_groups: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class OidcLogon(Base):
    """An OpenID Connect logon under way: the state (hashed) is its key, used once; the
    nonce and PKCE verifier stay on the server, bound to the browser that started it."""

    __tablename__ = "oidc_logons"

    state_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), nullable=False)
    browser_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    nonce: Mapped[str] = mapped_column(String(128), nullable=False)
    code_verifier: Mapped[str] = mapped_column(String(128), nullable=False)
    next_page: Mapped[str] = mapped_column(String(32), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


class OperatorAccount(Base):
    """A local account of the operator console (instances without an LDAP directory):
    an argon2id password hash, and the TOTP secret encrypted (AES-256-GCM under a key
    derived from the instance secret, `totp_salt`; the login is the associated data).
    `last_totp_step` is the newest accepted time step: a code is good once."""

    __tablename__ = "operator_accounts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(200), nullable=False)
    totp_salt: Mapped[bytes] = mapped_column(LargeBinary(16), nullable=False)
    totp_nonce: Mapped[bytes] = mapped_column(LargeBinary(12), nullable=False)
    totp_secret_sealed: Mapped[bytes] = mapped_column(LargeBinary(64), nullable=False)
    last_totp_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(String(320), nullable=False)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_logon_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
