"""The append-only, hash-chained, signed audit log and its verifier."""

from mailpki.audit.log import AuditLog, genesis
from mailpki.audit.verify import Problem, VerifyReport, verify_log

__all__ = ["AuditLog", "Problem", "VerifyReport", "genesis", "verify_log"]
