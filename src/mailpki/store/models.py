"""SQLAlchemy models. Serial numbers are stored as lowercase hex without leading zeros."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class SerialReservation(Base):
    """A serial number persisted (committed) before anything is signed with it."""

    __tablename__ = "serials"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    issuer: Mapped[str] = mapped_column(String(32), nullable=False)
    reserved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


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
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    der: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # "valid" or "revoked"; expiry is derived from not_after, never stored.
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="valid")
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    crl_partition: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    # CRL building and the "revoked since the last CRL?" check are index seeks, even
    # with a million revoked rows.
    __table_args__ = (
        Index("ix_certificates_partition_revoked", "crl_partition", "status", "revoked_at"),
        Index("ix_certificates_issuer_revoked", "issuer", "status", "revoked_at"),
    )


class CRLRecord(Base):
    """The latest signed CRL of one scope ("full", "p<N>", "root")."""

    __tablename__ = "crls"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, nullable=False)
    this_update: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    next_update: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
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
