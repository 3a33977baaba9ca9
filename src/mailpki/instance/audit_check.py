"""`mailpki audit verify`: the log, its witnesses and the state, checked together.

1. the chain, its checkpoints (ECDSA and ML-DSA-65) and the head (``verify_log``);
2. the log against every configured witness's copy (``check_copy``): records a witness
   saw sealed must still be there, unchanged, with their checkpoints, and the log may
   not end before the newest witnessed checkpoint (a cut log, a rolled-back database);
3. the state against the log (``check_instance_state``): certificates, revocations and
   escrowed keys each need their record; recoveries need theirs on both sides when the
   recovery service is embedded;
4. the embedded recovery service's own log.
A witness that cannot be read is a failure: it cannot vouch for anything. So is a
witness that holds no checkpoint of an instance whose log has records: it was never
handed one, or its copy was lost or swapped for an empty one, and either way nothing
outside the database vouches for the log (the checkpoints are missing). A witness that
holds fewer checkpoints than the log (the last hand-over failed or has not run yet) is
*behind*: said in a note, not a failure, since the records it has not seen are only as
safe as the database until the next hand-over.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailpki.audit import VerifyReport
from mailpki.audit.consistency import check_instance_state, check_recoveries
from mailpki.audit.keys import pq_required_from
from mailpki.audit.verify import Problem
from mailpki.audit.witness import check_copy, never_sealed
from mailpki.instance.audit_witnesses import witness_copies
from mailpki.instance.instance import Instance

__all__ = ["AuditCheck", "WitnessStatus", "check_audit"]


@dataclass(frozen=True)
class WitnessStatus:
    name: str
    location: str
    independent: bool
    why: str
    held: int
    last_seq: int
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class AuditCheck:
    log: VerifyReport
    witnesses: tuple[WitnessStatus, ...]
    unreadable: tuple[str, ...]
    state: tuple[Problem, ...]
    recovery: VerifyReport | None
    notes: tuple[str, ...] = field(default=())

    @property
    def problems(self) -> tuple[Problem, ...]:
        found = list(self.log.problems)
        unsealed = never_sealed(self.log)
        if unsealed is not None:
            found.append(unsealed)
        for witness in self.witnesses:
            found.extend(witness.problems)
        found.extend(self.state)
        found.extend(Problem(None, "unreadable-witness", u) for u in self.unreadable)
        if self.recovery is not None:
            found.extend(
                Problem(p.seq, p.kind, f"recovery service log: {p.message}")
                for p in self.recovery.problems
            )
        return tuple(found)

    @property
    def ok(self) -> bool:
        return not self.problems and self.log.omitted == 0


def check_audit(instance: Instance) -> AuditCheck:
    log = instance.verify_audit()
    keys = instance.audit_keys()
    copies, unreadable = witness_copies(instance, keys)
    statuses: list[WitnessStatus] = []
    notes: list[str] = []
    with instance.db.session() as session:
        pq_from = pq_required_from(session, keys)
        for copy in copies:
            problems = check_copy(session, keys, copy, pq_from=pq_from)
            if not copy.checkpoints and log.records:
                problems.append(
                    Problem(
                        None,
                        "witness-empty",
                        f"witness {copy.name} ({copy.location}) holds no checkpoint of this "
                        f"instance, whose log has {log.records} records: the checkpoints are "
                        "missing there (never handed over, or the witness's copy was lost or "
                        "replaced); if the witness is new, run 'mailpki audit seal'",
                    )
                )
            elif copy.last_seq < log.last_sealed_seq and not problems:
                notes.append(
                    f"witness {copy.name} is behind: it holds checkpoints up to record "
                    f"{copy.last_seq}, the log is sealed up to record {log.last_sealed_seq} "
                    "(the last hand-over failed or has not run yet; 'mailpki audit seal' "
                    "hands them over)"
                )
            statuses.append(
                WitnessStatus(
                    copy.name,
                    copy.location,
                    copy.independent,
                    copy.why,
                    len(copy.checkpoints),
                    copy.last_seq,
                    tuple(problems),
                )
            )
        state = check_instance_state(session)
        recovery: VerifyReport | None = None
        if instance.recovery_client.is_local:
            service = instance.recovery_client.local_service()
            recovery = service.verify_audit()
            with service.db.session() as krs_session:
                state += check_recoveries(session, krs_session)
        else:
            notes.append(
                "the recovery service runs apart: its own log and its side of each recovery "
                "are checked on its host ('mailpki recovery-service verify' there)"
            )
    auditors = str(instance.config.get("audit.witness_mail"))
    if auditors:
        notes.append(
            f"the daily checkpoint mails to {auditors} are kept by their readers: check one "
            "with 'mailpki audit export --out B' and 'mailpki audit verify --bundle B "
            "--witness SAVED.eml'"
        )
    return AuditCheck(log, tuple(statuses), tuple(unreadable), tuple(state), recovery, tuple(notes))


# -- a recent check, for pages and API calls -------------------------------------------

# The check reads the whole log (seconds with hundreds of thousands of records), so the
# console's dashboard and GET /api/v1/audit/status show a result at most this old.
RECENT_CHECK_SECONDS = 300.0


@dataclass(frozen=True)
class RecentAuditCheck:
    """A check and when it ran (each node keeps its own: at most RECENT_CHECK_SECONDS
    old, or run now when asked for `fresh`)."""

    check: AuditCheck
    checked_at: datetime


_recent_lock = threading.Lock()
_recent: dict[str, tuple[float, RecentAuditCheck]] = {}


def recent_audit_check(instance: Instance, *, fresh: bool = False) -> RecentAuditCheck:
    """`check_audit`, reused for RECENT_CHECK_SECONDS unless `fresh`."""
    key = str(instance.home.resolve())
    with _recent_lock:
        kept = _recent.get(key)
        if kept is not None and not fresh and time.monotonic() - kept[0] < RECENT_CHECK_SECONDS:
            return kept[1]
    result = RecentAuditCheck(check_audit(instance), datetime.now(UTC))
    with _recent_lock:
        _recent[key] = (time.monotonic(), result)
    return result
