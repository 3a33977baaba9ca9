"""One lifecycle run (`mailpki lifecycle run`, and `serve`'s housekeeping): expiry
notices, the officers' daily summary, leavers, the withdrawal of expired certificates.

Each part is safe to run on several nodes at once (see expiry.py and leavers.py), and
one part's failure does not stop the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailpki.ca.serials import show_serial
from mailpki.directory.publisher import PublishReport
from mailpki.errors import MailPKIError
from mailpki.instance.directory_ops import sync as sync_directory
from mailpki.instance.enrollments import flush_mail
from mailpki.instance.expiry import NoticeReport, send_notices, send_summary, withdraw_expired
from mailpki.instance.instance import Instance
from mailpki.instance.leavers import LeaverReport
from mailpki.instance.leavers import apply as apply_leavers


@dataclass
class LifecycleReport:
    notices: NoticeReport = field(default_factory=NoticeReport)
    leavers: LeaverReport = field(default_factory=LeaverReport)
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What the run did, one line each, for people."""
        out = [
            f"expiry notice ({days} days) to {mail} for {show_serial(serial)}"
            for mail, serial, days in self.notices.notices
        ]
        if self.notices.summary_sent_to:
            out.append(f"daily summary sent to {', '.join(self.notices.summary_sent_to)}")
        out += [f"{leaver.email}: {leaver.why}" for leaver in self.leavers.leavers]
        out += [f"revoked {show_serial(s)} (affiliationChanged)" for s in self.leavers.revoked]
        out += [f"kept {show_serial(s)} (lifecycle.on_leave = keep)" for s in self.leavers.kept]
        if self.leavers.stopped:
            out.append(f"leaver check stopped: {self.leavers.stopped}")
        out += [
            f"withdrew expired {show_serial(s)} from the directory" for s in self.notices.withdrawn
        ]
        out += self.notices.notes
        return out

    def summary(self) -> str:
        return (
            f"{len(self.notices.notices)} notices, "
            f"{'1 summary' if self.notices.summary_sent_to else 'no summary'}, "
            f"{len(self.leavers.leavers)} leavers ({len(self.leavers.revoked)} certificates "
            f"revoked), {len(self.notices.withdrawn)} expired withdrawn"
        )


def run(
    instance: Instance, *, actor: str, now: datetime | None = None, send_mail: bool = True
) -> LifecycleReport:
    """Every lifecycle chore once; `send_mail=False` leaves the mails queued."""
    when = now or datetime.now(UTC)
    report = LifecycleReport()

    def leavers() -> None:
        report.leavers = apply_leavers(instance, actor=actor, now=when)

    chores: tuple[tuple[str, Callable[[], None]], ...] = (
        ("expiry notices", lambda: send_notices(instance, actor=actor, now=when,
                                                report=report.notices)),
        ("daily summary", lambda: send_summary(instance, actor=actor, now=when,
                                               report=report.notices)),
        ("leavers", leavers),
        ("expired certificates", lambda: withdraw_expired(instance, actor=actor, now=when,
                                                          report=report.notices)),
    )  # fmt: skip
    for name, chore in chores:
        try:
            chore()
        except MailPKIError as exc:
            report.errors.append(f"{name}: {exc}")
    if report.leavers.revoked:
        instance.seal()  # revocations are sealed at once, as 'ca revoke' does
    if send_mail:
        flush_mail(instance)
        instance.publish_pending()
    return report


def sync_with_leavers(instance: Instance, *, actor: str) -> tuple[LeaverReport, PublishReport]:
    """`directory sync`: deliver every publication and make the directories match the
    CA, then apply lifecycle.on_leave - unless a directory was down during the sync (it
    is asked once per sync, and never read as "everyone left")."""
    report = sync_directory(instance, actor=actor)
    if report.unavailable:
        leavers = LeaverReport(
            stopped=f"directory unavailable ({', '.join(report.unavailable)}), "
            "nobody taken for a leaver"
        )
    else:
        leavers = apply_leavers(instance, actor=actor)
        if leavers.revoked:
            instance.seal()
        instance.publish_pending()  # the leavers' certificates leave the directory now
    flush_mail(instance)  # the officers' leaver notices
    return leavers, report
