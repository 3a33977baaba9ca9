"""Bulk enrollment: everyone in a CSV, their keys made in worker processes.

A key is delivered only once its person can open it. The workers write the PKCS#12
files (without waiting for the disk) but leave the escrow records *pending*; this (the
parent) process collects finished people into batches, makes the batch's files durable
(`sync_files`: the fsyncs happen here, while the workers go on generating keys), hands
the batch to `emit`, which must return only once the lines (with the generated
passwords) are written and flushed, and then records the batch as delivered in one
transaction (one UPDATE and one audit flush: a group commit). A kill -9 anywhere therefore leaves, besides delivered keys whose
passwords went out, only pending records (a file perhaps written, a password perhaps
printed), which `keys reconcile` revokes. Workers die with the parent
(`stop_with_parent`): none goes on enrolling for a process that can no longer print.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

from mailpki.base.files import sync_files
from mailpki.base.processes import stop_with_parent
from mailpki.enrollment.enroll import Delivery
from mailpki.errors import EscrowError, InputError, MailPKIError
from mailpki.instance.enrollments import (
    Enrollee,
    deliver_now,
    enroll_one,
    enroller,
    p12_name,
)
from mailpki.instance.instance import Instance


@dataclass(frozen=True)
class BulkItem:
    """One person's result: a serial, file and (generated) password, or an error."""

    line: int
    email: str
    serial: str | None
    path: str | None
    password: str | None
    error: str | None
    legacy_p12: bool = False


Emit = Callable[[Sequence[BulkItem]], None]

# Finished people are settled (synced, printed, recorded delivered) together once this
# many are ready or the oldest has waited this long, whichever comes first. The first
# few batches go out as soon as anything is ready, so the first lines show at once.
BATCH_SIZE = 64
BATCH_SECONDS = 1.0
EAGER_BATCHES = 4


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def bulk_enroll(
    instance: Instance,
    people: list[Enrollee],
    out_dir: Path,
    *,
    actor: str,
    workers: int,
    emit: Emit,
    password: bytes | None = None,
    legacy_p12: bool = False,
) -> list[BulkItem]:
    """Enroll everyone, `workers` processes at a time (RSA key generation is CPU-bound).

    Each batch of finished people goes to `emit` (successes and failures, in the order
    they finished); once it returns, the batch's keys are recorded as delivered. One
    person's failure does not stop the rest. Returns the people emitted as enrolled
    whose delivery could not be recorded (their record was revoked meanwhile, e.g. by
    `keys reconcile --all-pending` run during the enrollment): their files are void.
    """
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    taken = [p for p in people if (out_dir / p12_name(p.email)).exists()]
    if taken:
        raise InputError(
            f"{out_dir} already holds {len(taken)} of these PKCS#12 files "
            f"(e.g. {p12_name(taken[0].email)}); use an empty folder"
        )
    void: list[BulkItem] = []

    def settle(batch: Sequence[BulkItem]) -> None:
        sync_files(Path(item.path) for item in batch if item.error is None and item.path)
        emit(batch)
        void.extend(_record_delivered(instance, batch, actor))

    if workers <= 1:
        for person in people:
            item = _enroll_person(
                instance, person, out_dir, password, legacy_p12, actor, sync=False
            )
            settle([item])
    else:
        try:
            _enroll_in_pool(instance, people, out_dir, password, legacy_p12, actor, workers, settle)
        except BrokenProcessPool:
            raise EscrowError(
                "a worker process died (killed, or out of memory): the people printed so far "
                "are enrolled, the others are not; run 'mailpki keys reconcile --all-pending' "
                "to revoke what was left half-done, then enroll the others into a new folder"
            ) from None
    deliver_now(instance)
    return void


def _enroll_in_pool(
    instance: Instance,
    people: Iterable[Enrollee],
    out_dir: Path,
    password: bytes | None,
    legacy_p12: bool,
    actor: str,
    workers: int,
    settle: Emit,
) -> None:
    # fork: the workers' parent is this process, the one `stop_with_parent` watches.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker,
        initargs=(str(instance.home), os.getpid()),
    ) as pool:
        pending: set[Future[BulkItem]] = set()
        ready: list[BulkItem] = []
        oldest = 0.0  # when the first of `ready` finished
        settled = 0

        def collect(timeout: float | None) -> None:
            nonlocal pending, oldest, settled
            done: set[Future[BulkItem]] = set()
            if pending:
                done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            if done and not ready:
                oldest = time.monotonic()
            ready.extend(future.result() for future in done)
            if ready and (
                settled < EAGER_BATCHES
                or len(ready) >= BATCH_SIZE
                or not pending
                or time.monotonic() - oldest >= BATCH_SECONDS
            ):
                settle(list(ready))
                ready.clear()
                settled += 1

        for person in people:
            pending.add(
                pool.submit(_enroll_in_worker, person, str(out_dir), password, legacy_p12, actor)
            )
            # Enough queued that the workers never wait for this process; memory stays
            # flat for a million rows.
            if len(pending) >= workers * 8:
                collect(BATCH_SECONDS)
        while pending or ready:
            collect(BATCH_SECONDS)


def _record_delivered(instance: Instance, batch: Sequence[BulkItem], actor: str) -> list[BulkItem]:
    """Record the batch's keys as delivered, in one transaction; if one of them is no
    longer pending, one at a time, returning the ones that failed."""
    done = [item for item in batch if item.error is None and item.serial is not None]
    run = enroller(instance)

    def delivery(item: BulkItem) -> Delivery:
        assert item.serial is not None
        return Delivery(item.serial, item.email, item.legacy_p12)

    try:
        run.record_delivered([delivery(item) for item in done], actor=actor)
        return []
    except EscrowError:
        pass
    void: list[BulkItem] = []
    for item in done:
        try:
            run.record_delivered([delivery(item)], actor=actor)
        except EscrowError as exc:
            void.append(replace(item, error=str(exc)))
    return void


_worker_instance: Instance | None = None


def _init_worker(home: str, parent_pid: int) -> None:
    global _worker_instance
    stop_with_parent(parent_pid)
    _worker_instance = Instance.open(Path(home))


def _enroll_in_worker(
    person: Enrollee, out_dir: str, password: bytes | None, legacy: bool, actor: str
) -> BulkItem:
    assert _worker_instance is not None
    return _enroll_person(
        _worker_instance, person, Path(out_dir), password, legacy, actor, sync=False
    )


def _enroll_person(
    instance: Instance,
    person: Enrollee,
    out_dir: Path,
    password: bytes | None,
    legacy: bool,
    actor: str,
    *,
    sync: bool = True,
) -> BulkItem:
    """Everything but recording the delivery, which waits for the person's line.
    `sync=False`: the file is not fsynced (the parent does that for the batch)."""
    try:
        outcome = enroll_one(
            instance,
            email=person.email,
            name=person.name,
            given_name=person.given_name,
            surname=person.surname,
            key_type=person.key_type,
            out=out_dir / p12_name(person.email),
            actor=actor,
            password=password,
            legacy_p12=legacy,
            send_mail=False,
            record_delivery=False,
            sync=sync,
        )
    except MailPKIError as exc:
        return BulkItem(person.line, person.email, None, None, None, str(exc))
    return BulkItem(
        person.line,
        person.email,
        outcome.serial,
        str(outcome.path),
        outcome.generated_password,
        None,
        legacy,
    )
