"""`mailpki admin add`, `recovery …` (the admins' side) and `recovery-service …`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mailpki.ca.serials import parse_serial, show_serial, to_hex
from mailpki.cli.common import (
    HomeOption,
    console,
    err_console,
    handle_errors,
    open_instance,
    print_json,
    read_input,
    read_password_file,
)
from mailpki.errors import InputError
from mailpki.instance.actor import cli_actor
from mailpki.instance.instance import Instance
from mailpki.instance.recovery_admin import (
    AdminCredential,
    add_admin,
    approve_recovery,
    fetch_recovery,
    list_requests,
    reissue_recovered_by,
    report,
    request_recovery,
)
from mailpki.policy.roles import ROLES, parse_role

admin_app = typer.Typer(help="Administrators of the key recovery service.", no_args_is_help=True)
recovery_app = typer.Typer(
    help="Key recovery: request, approve, fetch, report, reissue.", no_args_is_help=True
)

P12Option = Annotated[Path, typer.Option("--p12", help="Your admin PKCS#12 (from 'admin add').")]
OptionalP12 = Annotated[
    Path | None,
    typer.Option(
        "--p12",
        help="Admin/auditor PKCS#12 to sign the query (needed when the service runs apart).",
    ),
]
PasswordFile = Annotated[
    Path, typer.Option("--password-file", help="File with the PKCS#12 password.")
]
OptionalPasswordFile = Annotated[
    Path | None, typer.Option("--password-file", help="File with the PKCS#12 password.")
]


def _credential(p12: Path, password_file: Path) -> AdminCredential:
    return AdminCredential.from_pkcs12(
        read_input(p12, "PKCS#12"), read_password_file(password_file)
    )


def _optional_credential(p12: Path | None, password_file: Path | None) -> AdminCredential | None:
    if p12 is None and password_file is None:
        return None
    if p12 is None or password_file is None:
        raise InputError("--p12 and --password-file go together")
    return _credential(p12, password_file)


def _with_instance(home: Path | None) -> Instance:
    return open_instance(home)


@admin_app.command("add")
@handle_errors
def admin_add(
    name: Annotated[str, typer.Option("--name")],
    email: Annotated[str, typer.Option("--email")],
    role: Annotated[str, typer.Option("--role", help="|".join(ROLES))],
    out: Annotated[Path, typer.Option("--out", help="Where to write the admin's PKCS#12.")],
    password_file: OptionalPasswordFile = None,
    home: HomeOption = None,
) -> None:
    """Issue an administrator certificate with its role (the key is not escrowed)."""
    chosen = parse_role(role)
    password = read_password_file(password_file) if password_file else None
    if not out.parent.is_dir():
        raise InputError(f"the folder {out.parent} does not exist")
    instance = _with_instance(home)
    try:
        added = add_admin(
            instance,
            name=name,
            email=email,
            role=chosen,
            out=out,
            password=password,
            actor=cli_actor(),
        )
    finally:
        instance.close()
    console.print(
        f"{email}: {chosen} certificate {show_serial(added.serial)}, PKCS#12 written to {out}",
        highlight=False,
    )
    if added.generated_password:
        console.print(
            f"PKCS#12 password (shown once, not stored): {added.generated_password}",
            highlight=False,
        )


@recovery_app.command("request")
@handle_errors
def recovery_request(
    email: Annotated[str, typer.Option("--email", help="Whose key to recover.")],
    p12: P12Option,
    password_file: PasswordFile,
    serial: Annotated[
        str | None,
        typer.Option("--serial", help="Which certificate (default: the newest escrowed key)."),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in both audit logs).")] = "",
    all_keys: Annotated[
        bool,
        typer.Option(
            "--all-keys",
            help="Every escrowed encryption key of the person (their whole key history), "
            "fetched as one PKCS#12 with the newest key first.",
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Ask the recovery service for a user's key; prints the request id."""
    if all_keys and serial is not None:
        raise InputError("--all-keys asks for every key of the person: leave out --serial")
    admin = _credential(p12, password_file)
    instance = _with_instance(home)
    try:
        answer = request_recovery(
            instance,
            admin,
            email=email,
            serial=to_hex(parse_serial(serial)) if serial else None,
            reason=reason,
            actor=cli_actor(),
            all_keys=all_keys,
        )
    finally:
        instance.close()
    console.print(answer["request_id"], highlight=False)
    serials = [str(s) for s in answer.get("target_serials") or [answer.get("target_serial") or "0"]]
    what = (
        f"certificate {show_serial(serials[0])}"
        if len(serials) == 1
        else f"{len(serials)} keys, certificates {', '.join(show_serial(s) for s in serials)}"
    )
    err_console.print(
        f"request for {answer.get('target_email')} ({what}) "
        f"needs {answer.get('quorum')} approvals by recovery officers",
        highlight=False,
    )


@recovery_app.command("approve")
@handle_errors
def recovery_approve(
    request: Annotated[str, typer.Argument(help="The request id.")],
    p12: P12Option,
    password_file: PasswordFile,
    home: HomeOption = None,
) -> None:
    """Approve a recovery request as a recovery officer."""
    admin = _credential(p12, password_file)
    instance = _with_instance(home)
    try:
        answer = approve_recovery(instance, admin, request.strip().lower(), actor=cli_actor())
    finally:
        instance.close()
    console.print(
        f"request {answer['request_id']}: {answer['approvals']} of {answer['quorum']} approvals ({answer['state']})",
        highlight=False,
    )


@recovery_app.command("fetch")
@handle_errors
def recovery_fetch(
    request: Annotated[str, typer.Argument(help="The request id.")],
    p12: P12Option,
    password_file: PasswordFile,
    out: Annotated[Path, typer.Option("--out", help="Where to write the recovered PKCS#12.")],
    new_password_file: Annotated[
        Path | None,
        typer.Option(
            "--new-password-file",
            help="Password for the recovered PKCS#12 (else generated, printed once).",
        ),
    ] = None,
    legacy_p12: Annotated[bool, typer.Option("--legacy-p12")] = False,
    home: HomeOption = None,
) -> None:
    """Fetch an approved recovery and write the user's key and certificate as PKCS#12."""
    from mailpki.base.files import write_atomically

    if out.exists():
        raise InputError(f"{out} exists; refusing to overwrite")
    if not out.parent.is_dir():
        raise InputError(f"the folder {out.parent} does not exist")
    admin = _credential(p12, password_file)
    new_password = (
        read_password_file(new_password_file, "new password") if new_password_file else None
    )
    instance = _with_instance(home)
    try:
        recovered = fetch_recovery(
            instance,
            admin,
            request.strip().lower(),
            new_password=new_password,
            actor=cli_actor(),
            legacy_p12=legacy_p12,
        )
        # The password first: a crash must never leave a file nobody can open.
        if recovered.generated_password:
            console.print(
                f"PKCS#12 password (shown once, not stored): {recovered.generated_password}",
                highlight=False,
            )
            console.file.flush()
        write_atomically(out, recovered.pkcs12, private=True)
    finally:
        instance.close()
    if len(recovered.serials) > 1:
        console.print(
            f"recovered {len(recovered.serials)} keys of {recovered.email} (certificates "
            f"{', '.join(show_serial(s) for s in recovered.serials)}; the newest, "
            f"{show_serial(recovered.serial)}, first) into {out}",
            highlight=False,
        )
        return
    console.print(
        f"recovered the key of {recovered.email} (certificate {show_serial(recovered.serial)}) into {out}",
        highlight=False,
    )


@recovery_app.command("list")
@handle_errors
def recovery_list(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    p12: OptionalP12 = None,
    password_file: OptionalPasswordFile = None,
    home: HomeOption = None,
) -> None:
    """Every recovery request and where it stands."""
    admin = _optional_credential(p12, password_file)
    instance = _with_instance(home)
    try:
        rows = list_requests(instance, admin)
    finally:
        instance.close()
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no recovery requests", highlight=False)
    for r in rows:
        console.print(
            f"{r['request_id']}  {r['state']:<9}  "
            f"{r['target_email']} ({show_serial(str(r['target_serial']))}"
            + (f", all {r['key_count']} keys" if int(r.get("key_count") or 1) > 1 else "")
            + f")  by {r['requester']}  approved by {', '.join(r['approved_by']) or '-'}",
            highlight=False,
        )


@recovery_app.command("report")
@handle_errors
def recovery_report(
    admin: Annotated[
        str | None, typer.Option("--admin", help="Only keys this admin recovered.")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="YYYY-MM-DD or ISO time.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    p12: OptionalP12 = None,
    password_file: OptionalPasswordFile = None,
    home: HomeOption = None,
) -> None:
    """Which keys each admin recovered, when, approved by whom."""
    credential = _optional_credential(p12, password_file)
    instance = _with_instance(home)
    try:
        rows = report(instance, credential, recovered_by=admin, since=since)
    finally:
        instance.close()
    if as_json:
        print_json(rows)
        return
    _print_report(rows)


def _print_report(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("no keys recovered", highlight=False)
        return
    by_admin: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_admin.setdefault(row["recovered_by"], []).append(row)
    for admin, items in sorted(by_admin.items()):
        console.print(f"{admin}: {len(items)} key(s) recovered", highlight=False)
        for r in items:
            console.print(
                f"  {r['recovered_at']}  "
                f"{r['target_email']} ({show_serial(str(r['target_serial']))})  "
                f"approved by {', '.join(r['approved_by'])}  request {r['request_id']}"
                + (f"  reason: {r['reason']}" if r["reason"] else ""),
                highlight=False,
            )


@recovery_app.command("reissue")
@handle_errors
def recovery_reissue(
    recovered_by: Annotated[
        str, typer.Option("--recovered-by", help="The suspected admin's mail address.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the new PKCS#12 files.")] = Path(
        "reissued"
    ),
    password_file: OptionalPasswordFile = None,
    p12: OptionalP12 = None,
    p12_password_file: Annotated[Path | None, typer.Option("--p12-password-file")] = None,
    home: HomeOption = None,
) -> None:
    """Revoke (keyCompromise) and reissue every key that admin recovered."""
    auditor = _optional_credential(p12, p12_password_file)
    password = read_password_file(password_file) if password_file else None
    instance = _with_instance(home)
    try:
        results = reissue_recovered_by(
            instance,
            recovered_by.strip().lower(),
            out_dir=out,
            actor=cli_actor(),
            auditor=auditor,
            password=password,
        )
    finally:
        instance.close()
    if not results:
        console.print(f"{recovered_by} recovered no keys: nothing to do", highlight=False)
        return
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            err_console.print(
                f"{show_serial(r.old_serial)}: {r.error}", highlight=False, markup=False
            )
            continue
        if r.new_serial is None:
            console.print(
                f"{r.email}: {show_serial(r.old_serial)} revoked (another key of the same person, reissued above)",
                highlight=False,
            )
            continue
        new = show_serial(r.new_serial)
        line = f"{r.email}: {show_serial(r.old_serial)} revoked, new certificate {new} in {r.path}"
        if r.generated_password:
            line += f" (password, shown once: {r.generated_password})"
        console.print(line, highlight=False)
    if failed:
        raise typer.Exit(1)


# `recovery connect` lives with the recovery service's commands.
from mailpki.cli.recovery_service import register_connect  # noqa: E402

register_connect(recovery_app)
