"""The audit log verifier: walks the chain and names every kind of tampering it sees.

Records are streamed in seq order with bounded memory. Each record is checked
against its own hash (content), against the record before it (link), and the head
row and the signed checkpoints are checked against the records. When a check fails
the verifier works out what most plausibly happened (modified, deleted, inserted,
reordered, truncated) so the report tells a person where to look.

Limits, by construction: without an outside copy of the newest checkpoint, an
attacker with database access can rewrite or cut everything after the last
surviving checkpoint (and can delete checkpoint rows) without a trace.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from mailpki.audit.keys import AuditKeys, pq_required_from, signature_problem
from mailpki.audit.log import HEAD_ID, ZERO_HASH, canonical, record_hash
from mailpki.errors import AuditError
from mailpki.store.models import AuditCheckpoint, AuditHead, AuditRecord

__all__ = ["KINDS", "MAX_PROBLEMS", "Problem", "VerifyReport", "verify_log"]

KINDS = frozenset(
    {"modified", "deleted", "inserted", "reordered", "truncated", "bad-checkpoint", "head-mismatch"}
)
MAX_PROBLEMS = 100
_BATCH = 1000
_WINDOW = 4096  # recent hash -> true seq, so most look-ups never reach the database
_MAX_LOOKUPS = 1000  # by-hash look-ups scan the table: cap them
_LOOKUP_DEPTH = 3
_MAX_SHIFT = 8  # how far a renumbered record is searched for when its predecessor is gone
_MAX_TAIL = 10_000


@dataclass(frozen=True)
class Problem:
    """One finding: ``seq`` is the record it is about (None: the log as a whole)."""

    seq: int | None
    kind: str
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """What the verifier saw. ``omitted`` counts findings past the first MAX_PROBLEMS."""

    records: int
    checkpoints: int
    last_sealed_seq: int
    problems: tuple[Problem, ...]
    omitted: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.omitted == 0


class _Rec(NamedTuple):
    seq: int
    time: str
    event: str
    actor: str
    data: str
    prev_hash: str
    hash: str


class _HeadView(NamedTuple):
    seq: int
    hash: str
    record_hash: str | None  # hash of the record stored at head.seq, read in the same query


@dataclass
class _Prev:
    """The previous record in seq order, as far as the walk needs it."""

    seq: int
    hash: str
    prev_hash: str
    true_seq: int | None  # where it belongs in the chain, if known
    content_ok: bool
    flagged: bool  # already reported: link breaks right after it are consequences


@dataclass
class _Run:
    """Consecutive records sitting `offset` places away from where they belong."""

    start: int
    end: int
    offset: int


def _digest(rec: _Rec, seq: int) -> str | None:
    """The hash ``rec`` would have at ``seq``; None if its stored data is not canonical."""
    try:
        data = json.loads(rec.data)
        if canonical(data).decode() != rec.data:
            return None  # every stored byte counts, not just the JSON meaning
        return record_hash(rec.prev_hash, seq, rec.time, rec.event, rec.actor, data)
    except (ValueError, RecursionError):  # undecodable or unencodable: cannot match
        return None


def _span(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}..{last}"


def _were(first: int, last: int) -> str:
    return f"{_span(first, last)} {'was' if first == last else 'were'}"


def _read_head(session: Session) -> _HeadView | None:
    # One statement, so the head and its record come from the same snapshot.
    row = session.execute(
        select(AuditHead.seq, AuditHead.hash, AuditRecord.hash)
        .select_from(AuditHead)
        .outerjoin(AuditRecord, AuditRecord.seq == AuditHead.seq)
        .where(AuditHead.id == HEAD_ID)
    ).first()
    return None if row is None else _HeadView(row[0], row[1], row[2])


@dataclass
class _Walker:
    session: Session
    head_seq: int | None  # head at the start; None if the head row is missing
    found: list[tuple[int | None, Problem]] = field(default_factory=list)  # (origin, problem)
    omitted: int = 0
    records: int = 0
    last_seq: int = 0
    lookups: int = 0
    cache: OrderedDict[str, int] = field(default_factory=OrderedDict)
    run: _Run | None = None
    late_gaps: list[tuple[int, int]] = field(default_factory=list)
    tail: list[int] = field(default_factory=list)
    prev: _Prev = field(
        default_factory=lambda: _Prev(0, ZERO_HASH, ZERO_HASH, 0, content_ok=True, flagged=False)
    )

    # -- bookkeeping ---------------------------------------------------------------

    def add(self, kind: str, seq: int | None, message: str, origin: int | None = None) -> None:
        """Record a finding; ``origin`` is the record whose reading revealed it."""
        if len(self.found) >= MAX_PROBLEMS:
            self.omitted += 1
            return
        self.found.append((seq if origin is None else origin, Problem(seq, kind, message)))

    @property
    def capped(self) -> bool:
        return len(self.found) >= MAX_PROBLEMS

    def remember(self, hash_: str, true_seq: int) -> None:
        self.cache[hash_] = true_seq
        if len(self.cache) > _WINDOW:
            self.cache.popitem(last=False)

    def resolve(self, hash_: str, depth: int = _LOOKUP_DEPTH) -> int | None:
        """The true seq of the genuine record whose hash is ``hash_``, if there is one."""
        if hash_ == ZERO_HASH:
            return 0
        if hash_ in self.cache:
            return self.cache[hash_]
        if self.capped or self.lookups >= _MAX_LOOKUPS:
            return None
        self.lookups += 1
        rows = self.session.execute(
            select(
                AuditRecord.seq, AuditRecord.time, AuditRecord.event, AuditRecord.actor,
                AuditRecord.data, AuditRecord.prev_hash, AuditRecord.hash,
            )
            .where(AuditRecord.hash == hash_)
            .limit(4)
        ).all()  # fmt: skip
        for row in rows:
            rec = _Rec(*row)
            if _digest(rec, rec.seq) == rec.hash:
                return rec.seq
            if depth > 0:
                # The owner is itself out of place: find where it belongs.
                k = self.resolve(rec.prev_hash, depth - 1)
                if k is not None and _digest(rec, k + 1) == rec.hash:
                    return k + 1
        return None

    def close_run(self) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        first, last = run.start - run.offset, run.end - run.offset
        if run.start == run.end:
            message = (
                f"record {run.start} is out of place: it is really record {first} "
                "(records were reordered or renumbered)"
            )
        else:
            message = (
                f"records {run.start}..{run.end} are out of place: they are really records "
                f"{first}..{last} (records were reordered or renumbered)"
            )
        self.add("reordered", run.start, message)

    def extend_run(self, seq: int, true_seq: int) -> None:
        offset = seq - true_seq
        run = self.run
        if run is not None and run.offset == offset and run.end == seq - 1:
            run.end = seq
            return
        self.close_run()
        self.run = _Run(seq, seq, offset)

    def gap(self, first: int, last: int) -> None:
        # Missing seqs beyond the starting head may be the gap before forged records
        # appended past the head: decide once the final head is known.
        if self.head_seq is not None and first > self.head_seq:
            if len(self.late_gaps) < _MAX_TAIL:
                self.late_gaps.append((first, last))
            return
        self.add(
            "deleted", first,
            f"{_were(first, last)} deleted: the sequence jumps from {first - 1} to {last + 1}",
        )  # fmt: skip

    # -- the walk ------------------------------------------------------------------

    def step(self, rec: _Rec) -> None:
        s = rec.seq
        self.records += 1
        if s < 1:
            self.add("inserted", s, f"record {s} was inserted: sequence numbers start at 1")
            return
        self.last_seq = s
        if self.head_seq is not None and s > self.head_seq and len(self.tail) < _MAX_TAIL:
            self.tail.append(s)
        prev = self.prev
        gap = s != prev.seq + 1
        if gap:
            self.gap(prev.seq + 1, s - 1)
        content_ok = _digest(rec, s) == rec.hash
        linked = rec.prev_hash == prev.hash
        true_seq: int | None = s
        flagged = False
        misplaced = False

        if content_ok:
            if not linked and not gap and not prev.flagged:
                flagged = self._broken_link(rec, prev)
        else:
            flagged = True
            cand: int | None = None
            if linked and prev.true_seq is not None and prev.true_seq + 1 != s:
                cand = prev.true_seq + 1  # continuing a run of shifted records
            elif not linked:
                k = self.resolve(rec.prev_hash)
                cand = None if k is None else k + 1
            if cand is not None and cand != s and _digest(rec, cand) == rec.hash:
                misplaced = True
                true_seq = cand
                if (
                    not linked
                    and not gap
                    and prev.content_ok
                    and not prev.flagged
                    and prev.prev_hash == rec.prev_hash
                ):
                    self.add(
                        "inserted", prev.seq,
                        f"record {prev.seq} was inserted: it and the original record {cand} "
                        f"(now at {s}) both follow record {cand - 1}",
                    )  # fmt: skip
                self.extend_run(s, cand)
            elif not linked and (shifted := self._renumbered_down(rec, s)) is not None:
                misplaced = True
                true_seq = shifted
            else:
                true_seq = None if not linked else s
                self.add(
                    "modified", s,
                    f"record {s} was modified: its content no longer matches its hash",
                )  # fmt: skip
        if not misplaced:
            self.close_run()
        if true_seq is not None and (content_ok or misplaced):
            self.remember(rec.hash, true_seq)
        self.prev = _Prev(s, rec.hash, rec.prev_hash, true_seq, content_ok, flagged)

    def _broken_link(self, rec: _Rec, prev: _Prev) -> bool:
        """A self-consistent record that does not follow the one before it."""
        s = rec.seq
        k = self.resolve(rec.prev_hash)
        if k is None:
            if prev.seq == 0:
                self.add("modified", s, f"record {s} was replaced: it does not start the chain")
                return True
            # Its predecessor's original hash exists nowhere: that record was rewritten
            # and its hash recomputed to match.
            self.add(
                "modified", prev.seq,
                f"record {prev.seq} was modified and its hash recomputed: record {s} no "
                "longer links to it",
                origin=s,
            )  # fmt: skip
            return False
        if k < s - 1:
            self.add(
                "inserted", s,
                f"record {s} was inserted: it follows record {k}, not record {s - 1}",
            )  # fmt: skip
        else:
            self.add(
                "reordered", s,
                f"record {s} is out of place: it follows record {k}, which is not stored "
                "just before it",
            )  # fmt: skip
        return True

    def _renumbered_down(self, rec: _Rec, s: int) -> int | None:
        """Records after a deletion renumbered to hide the gap: find the true seq."""
        for shift in range(1, _MAX_SHIFT + 1):
            if _digest(rec, s + shift) == rec.hash:
                if self.run is None or self.run.offset != -shift:
                    self.add(
                        "deleted", s,
                        f"record {s + shift - 1} was deleted and the records after it "
                        f"renumbered to hide the gap (record {s + shift} now sits at {s})",
                    )  # fmt: skip
                self.extend_run(s, s + shift)
                return s + shift
        return None

    def finish(self, head_end: int | None) -> None:
        """Close the walk once the head at the end (``head_end``) is known."""
        self.close_run()
        limit = head_end if head_end is not None else self.head_seq
        for first, last in self.late_gaps:
            if limit is not None and first <= limit:
                end = min(last, limit)
                self.add(
                    "deleted", first,
                    f"{_were(first, end)} deleted: the sequence jumps from {first - 1} "
                    f"to {last + 1}",
                )  # fmt: skip
        if limit is None or self.last_seq <= limit:
            return
        # Records past the head were not written by the log: drop what the walk said
        # about them and name them once.
        self.found = [(o, p) for o, p in self.found if o is None or o <= limit]
        beyond = [s for s in self.tail if s > limit]
        first = beyond[0] if beyond else limit + 1
        self.add(
            "inserted", first,
            f"{_span(first, self.last_seq)} {'lies' if first == self.last_seq else 'lie'} "
            f"beyond the head of the log (record {limit}): added outside the audit log, "
            "or the head was rolled back",
        )  # fmt: skip


def _has_pq_column(session: Session) -> bool:
    """False on a database not yet migrated to ML-DSA checkpoints (read-only verify)."""
    columns = inspect(session.connection()).get_columns("audit_checkpoints")
    return any(column["name"] == "pq_signature" for column in columns)


def verify_log(
    session: Session,
    public_key: PublicKeyTypes,
    pq_key: mldsa.MLDSA65PublicKey | None = None,
) -> VerifyReport:
    """Walk the whole log and report every problem found (read-only; does not commit).

    With ``pq_key``, checkpoints are also checked with ML-DSA-65: those sealed from the
    ``audit.key_added`` record of that key on must carry a valid ML-DSA-65 signature;
    older ones verify with the classical key alone.

    Safe against concurrent appenders: records appended while the walk runs are not
    reported as tampering.
    """

    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise AuditError(f"the audit public key must be EC or RSA, not {type(public_key).__name__}")
    keys = AuditKeys(public_key, pq_key)
    pq_from = pq_required_from(session, keys)
    head_start = _read_head(session)
    walker = _Walker(session, None if head_start is None else head_start.seq)
    records = select(
        AuditRecord.seq, AuditRecord.time, AuditRecord.event, AuditRecord.actor,
        AuditRecord.data, AuditRecord.prev_hash, AuditRecord.hash,
    ).order_by(AuditRecord.seq)  # fmt: skip
    # yield_per streams in batches (server-side cursor on PostgreSQL): bounded memory.
    for row in session.execute(records.execution_options(yield_per=_BATCH)):
        walker.step(_Rec(*row))
    head_end = _read_head(session)
    walker.finish(None if head_end is None else head_end.seq)

    # Checkpoints, each joined to the record it seals (same snapshot).
    checkpoints = 0
    last_sealed = 0
    truncated_to = 0
    truncated_by = ""
    pq_column = _has_pq_column(session)
    cp_query = (
        select(
            AuditCheckpoint.seq, AuditCheckpoint.hash, AuditCheckpoint.time,
            AuditCheckpoint.signature, AuditRecord.hash,
            AuditCheckpoint.pq_signature if pq_column else AuditCheckpoint.signature,
        )
        .select_from(AuditCheckpoint)
        .outerjoin(AuditRecord, AuditRecord.seq == AuditCheckpoint.seq)
        .order_by(AuditCheckpoint.seq)
    )  # fmt: skip
    for seq, hash_, time, signature, sealed_hash, pq_signature in session.execute(
        cp_query.execution_options(yield_per=_BATCH)
    ):
        checkpoints += 1
        why = signature_problem(
            keys, seq, hash_, time, signature, pq_signature if pq_column else None,
            pq_required=pq_from is not None and seq >= pq_from,
        )  # fmt: skip
        signed = why is None
        if not signed:
            walker.add(
                "bad-checkpoint", seq,
                f"the checkpoint at record {seq} does not hold: {why}; the checkpoint was "
                "forged or altered",
            )  # fmt: skip
        if sealed_hash is None:
            if seq > walker.last_seq and seq > truncated_to:
                truncated_to, truncated_by = seq, f"checkpoint {seq} sealed record {seq}"
            # A missing record inside the log is already reported as deleted.
            continue
        if sealed_hash != hash_:
            walker.add(
                "bad-checkpoint", seq,
                f"record {seq} no longer matches the checkpoint that sealed it: records up to "
                f"{seq} were changed after they were sealed",
            )  # fmt: skip
        elif signed:
            last_sealed = seq

    # The head row against the records.
    if head_start is None or head_end is None:
        if walker.records or checkpoints:
            walker.add(
                "head-mismatch", None,
                "the audit head row is missing: it was deleted, so the end of the log "
                "cannot be checked",
            )  # fmt: skip
    else:
        if head_start.seq > walker.last_seq and head_start.seq > truncated_to:
            truncated_to, truncated_by = head_start.seq, f"the head says record {head_start.seq}"
        reported: set[int] = set()
        for head in (head_start, head_end):
            if head.seq in reported:
                continue
            expected = ZERO_HASH if head.seq == 0 else head.record_hash
            if expected is not None and head.hash != expected:
                reported.add(head.seq)
                walker.add(
                    "head-mismatch", head.seq,
                    f"the audit head does not match record {head.seq}: that record was "
                    "modified, or the head row was altered",
                )  # fmt: skip
    if truncated_to > walker.last_seq:
        first = walker.last_seq + 1
        walker.add(
            "truncated", first,
            f"the log was cut short: {_span(first, truncated_to)} "
            f"{'is' if first == truncated_to else 'are'} missing from the end "
            f"(the last record is {walker.last_seq}, but {truncated_by})",
        )  # fmt: skip

    problems = sorted((p for _, p in walker.found), key=lambda p: (p.seq is None, p.seq or 0))
    return VerifyReport(
        records=walker.records,
        checkpoints=checkpoints,
        last_sealed_seq=last_sealed,
        problems=tuple(problems),
        omitted=walker.omitted,
    )
