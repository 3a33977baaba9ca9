"""The JSON API of an instance, mounted at /api/v1.

Bearer tokens (`mailpki api-token create`) carry an operator role; every endpoint names
the permission it needs (policy/operator_roles.py), every change is audited with the
token's name (`api:NAME`), calls are limited per token, and every error has one shape:
`{"error": {"code": ..., "message": ...}}`. The OpenAPI 3.1 document is generated from
this code at /api/v1/openapi.json.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations,
# and the permission dependencies are closures it must be able to evaluate.
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as FPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailpki import __version__
from mailpki.ca.crl import parse_reason
from mailpki.ca.serials import parse_serial
from mailpki.errors import (
    AuthenticationError,
    InputError,
    MailPKIError,
    NotFoundError,
    RecoveryError,
)
from mailpki.instance.api_tokens import ApiPrincipal, authenticate_token
from mailpki.instance.audit_check import recent_audit_check
from mailpki.instance.directory_ops import decide_request
from mailpki.instance.expiry import expiring_page
from mailpki.instance.instance import Instance
from mailpki.instance.invitations import invite_users
from mailpki.instance.recovery_admin import report as recovery_report
from mailpki.instance.renewal import MAX_RENEW_WITHIN_DAYS
from mailpki.instance.renewal_notice import send_renewal_notice
from mailpki.policy.operator_roles import Permission, allows
from mailpki.web.api.schemas import (
    AuditStatus,
    Certificate,
    CertificatePage,
    Decision,
    EnrollmentRequest,
    ErrorBody,
    ExpiringCertificate,
    ExpiringPage,
    InvitationReport,
    InvitationRequest,
    Person,
    Recovery,
    RenewalNotice,
    Revocation,
    Witness,
)

SerialPath = Annotated[
    str,
    FPath(
        pattern=r"^(0x)?[0-9A-Fa-f:]{1,64}$",
        description=(
            "Hex, as `mailpki certs list` prints it, with or without the leading zeros "
            "(colons allowed)."
        ),
    ),
]
_bearer = HTTPBearer(auto_error=False, description="A token from `mailpki api-token create`.")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "The request is not acceptable (a bad serial, reason or login)"),
        (401, "No token, or a token that is unknown, revoked or expired"),
        (403, "The token's role does not allow this"),
        (404, "Nothing with that name or number"),
        (409, "The request conflicts with the current state"),
        (422, "The request does not match this document"),
        (429, "Too many calls with this token; try again later"),
    )
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RateLimiter:
    """At most `per_minute` calls per token in any 60 s (per node)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            calls = self._calls.setdefault(key, deque())
            while calls and now - calls[0] > 60:
                calls.popleft()
            if len(calls) >= self.per_minute:
                return False
            calls.append(now)
            return True


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def create_api(instance: Instance, *, rate_per_minute: int = 600) -> FastAPI:
    """The API app of one instance (mount it at /api/v1)."""
    api = FastAPI(
        title="mailpki API",
        version=__version__,
        description=__doc__,
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses=_ERRORS,
    )
    limiter = RateLimiter(rate_per_minute)

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 429:
            headers = {"Retry-After": "60"}
        return _error(exc.status, exc.code, exc.message, headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal_error", "internal error; the server log has the details")

    def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiPrincipal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
        try:
            caller = authenticate_token(instance, credentials.credentials)
        except AuthenticationError as exc:
            raise ApiError(401, "unauthorized", str(exc)) from None
        if not limiter.allow(caller.name):
            raise ApiError(429, "rate_limited", "too many calls with this token; try again later")
        return caller

    def needs(permission: Permission) -> Callable[[ApiPrincipal], ApiPrincipal]:
        def check(caller: Annotated[ApiPrincipal, Depends(principal)]) -> ApiPrincipal:
            if not allows(caller.role, permission):
                raise ApiError(
                    403, "forbidden", f"the role {caller.role} may not do this ({permission})"
                )
            return caller

        return check

    def run(action: Callable[[], Any]) -> Any:
        """Call a use case, turning its errors into API errors."""
        try:
            return action()
        except NotFoundError as exc:
            raise ApiError(404, "not_found", _line(exc)) from None
        except (InputError, RecoveryError) as exc:
            raise ApiError(400, "bad_request", _line(exc)) from None
        except MailPKIError as exc:
            raise ApiError(409, "conflict", _line(exc)) from None

    # -- people and certificates -------------------------------------------------------

    @api.get("/people", response_model=list[Person], tags=["people"])
    def search_people(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.READ_PEOPLE))],
        q: Annotated[
            str, Query(min_length=1, max_length=100, description="Name, mail or login prefix.")
        ],
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> list[Person]:
        """People in the directories whose name, mail or login starts with `q`."""
        if any(ord(c) < 32 for c in q):
            raise ApiError(400, "bad_request", "the search text has control characters")
        entries = run(lambda: instance.directories.search(q, limit=limit))
        return [Person.of(entry) for entry in entries]

    @api.get("/certificates", response_model=CertificatePage, tags=["certificates"])
    def list_certificates(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.READ_CERTIFICATES))],
        email: Annotated[str | None, Query(max_length=320)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> CertificatePage:
        """Certificates, newest first, optionally of one mail address."""
        page, total = run(
            lambda: instance.list_certificates(limit=limit, email=email, offset=offset)
        )
        return CertificatePage(
            items=[Certificate.of(info) for info in page], total=total, offset=offset, limit=limit
        )

    def _serial(text: str) -> int:
        return int(run(lambda: parse_serial(text)))

    # Before /certificates/{serial}: "expiring" is a path of its own, not a serial.
    @api.get("/certificates/expiring", response_model=ExpiringPage, tags=["certificates"])
    def list_expiring(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.READ_CERTIFICATES))],
        within: Annotated[
            int | None,
            Query(
                ge=0,
                le=MAX_RENEW_WITHIN_DAYS,
                description="Days from now (default: lifecycle.renew_window_days, the "
                "portal's renewal window).",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> ExpiringPage:
        """What `mailpki certs expiring` lists: unrevoked mail certificates that expire
        within `within` days, soonest first, renewed ones included (with their successor)."""
        days = (
            within
            if within is not None
            else int(instance.config.get("lifecycle.renew_window_days"))
        )
        now = datetime.now(UTC)
        rows, total = run(
            lambda: expiring_page(
                instance, timedelta(days=days), limit=limit, offset=offset, now=now
            )
        )
        return ExpiringPage(
            items=[ExpiringCertificate.of(row, now) for row in rows],
            within=days,
            total=total,
            offset=offset,
            limit=limit,
        )

    @api.get("/certificates/{serial}", response_model=Certificate, tags=["certificates"])
    def get_certificate(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.READ_CERTIFICATES))],
        serial: SerialPath,
    ) -> Certificate:
        number = _serial(serial)
        return Certificate.of(run(lambda: instance.ca.get(number)))

    @api.get(
        "/certificates/{serial}/pem",
        tags=["certificates"],
        response_class=Response,
        responses={200: {"content": {"application/x-pem-file": {}}, "description": "PEM"}},
    )
    def get_certificate_pem(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.READ_CERTIFICATES))],
        serial: SerialPath,
    ) -> Response:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        number = _serial(serial)
        der = run(lambda: instance.ca.certificate_der(number))
        pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
        return Response(pem, media_type="application/x-pem-file")

    @api.post("/certificates/{serial}/revoke", response_model=Certificate, tags=["certificates"])
    def revoke_certificate(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.REVOKE))],
        serial: SerialPath,
        body: Revocation,
    ) -> Certificate:
        """Revoke (OCSP answers at once; the next CRL carries it). Audited as api:NAME."""
        number = _serial(serial)
        flag = run(lambda: parse_reason(body.reason))
        info = run(lambda: instance.ca.revoke(number, flag, actor=caller.actor))
        instance.publish_pending()
        instance.seal()
        return Certificate.of(info)

    @api.post(
        "/certificates/{serial}/renewal-notice", response_model=RenewalNotice, tags=["certificates"]
    )
    def notify_renewal(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.INVITE))],
        serial: SerialPath,
    ) -> RenewalNotice:
        """Mail the certificate's holder the expiry notice with a one-time renewal link;
        they renew in the portal, so no key, certificate or password reaches the caller.

        Refused (409) for a certificate the portal would not renew: revoked, expired,
        already renewed, not the person's current one, not yet within
        lifecycle.renew_window_days, or its holder disabled in the directory; and for a
        second notice of the same certificate on the same day. The mail is queued and
        sent by the server's outbox. Audited as `renewal.noticed` by api:NAME."""
        number = _serial(serial)
        notice = run(lambda: send_renewal_notice(instance, number, actor=caller.actor))
        instance.seal()
        return RenewalNotice(
            serial=notice.serial,
            email=notice.email,
            not_after=notice.not_after,
            days_left=notice.days_left,
            link=notice.link,
            queued=True,
            note=notice.note,
        )

    # -- invitations and requests --------------------------------------------------------

    @api.post("/invitations", response_model=InvitationReport, tags=["invitations"])
    def create_invitations(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.INVITE))],
        body: InvitationRequest,
    ) -> InvitationReport:
        """Mail one-time enrollment links; one error line per person not invited.

        The mails are queued with the invitations and sent by the server's outbox (its
        housekeeping), not inside this call: `queued` says how many wait there."""
        report = run(
            lambda: invite_users(
                instance,
                body.logins,
                all_people=False,
                filter_text=None,
                resend=body.resend,
                actor=caller.actor,
                send_now=False,
            )
        )
        instance.seal()
        return InvitationReport(
            invited=len(report.sent),
            queued=len(report.sent),
            errors=report.errors,
            notes=report.notes,
        )

    @api.get("/requests", response_model=list[EnrollmentRequest], tags=["requests"])
    def list_requests(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.READ_REQUESTS))],
        state: Annotated[
            str | None, Query(pattern="^(pending|approved|rejected|enrolled)$")
        ] = None,
    ) -> list[EnrollmentRequest]:
        return [EnrollmentRequest.of(view) for view in run(lambda: instance.approvals.list(state))]

    def _decide(
        caller: ApiPrincipal, request_id: int, body: Decision, approve: bool
    ) -> EnrollmentRequest:
        view = run(
            lambda: decide_request(
                instance, request_id, approve=approve, actor=caller.actor, note=body.note
            )
        )
        instance.seal()
        return EnrollmentRequest.of(view)

    @api.post("/requests/{request_id}/approve", response_model=EnrollmentRequest, tags=["requests"])
    def approve_request(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.DECIDE_REQUESTS))],
        request_id: Annotated[int, FPath(ge=1, le=2**62)],
        body: Decision,
    ) -> EnrollmentRequest:
        return _decide(caller, request_id, body, True)

    @api.post("/requests/{request_id}/reject", response_model=EnrollmentRequest, tags=["requests"])
    def reject_request(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.DECIDE_REQUESTS))],
        request_id: Annotated[int, FPath(ge=1, le=2**62)],
        body: Decision,
    ) -> EnrollmentRequest:
        return _decide(caller, request_id, body, False)

    # -- audit -----------------------------------------------------------------------------

    @api.get("/recovery/report", response_model=list[Recovery], tags=["audit"])
    def recoveries(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.READ_RECOVERY_REPORT))],
        admin: Annotated[str | None, Query(max_length=320)] = None,
        since: Annotated[
            str | None, Query(max_length=40, description="YYYY-MM-DD or ISO time")
        ] = None,
    ) -> list[Recovery]:
        """Keys recovered, per administrator (embedded recovery service only; a service
        run apart answers signed queries from the CLI)."""
        rows = run(lambda: recovery_report(instance, None, recovered_by=admin, since=since))
        return [Recovery.model_validate(row) for row in rows]

    @api.get("/audit/status", response_model=AuditStatus, tags=["audit"])
    def audit_status(
        caller: Annotated[ApiPrincipal, Depends(needs(Permission.READ_AUDIT))],
        fresh: Annotated[
            bool,
            Query(description="Check now instead of showing a check at most 5 minutes old."),
        ] = False,
    ) -> AuditStatus:
        """What `mailpki audit verify` says: the log, its witnesses and the state, as
        checked at `checked_at` (the check reads the whole log)."""
        recent = run(lambda: recent_audit_check(instance, fresh=fresh))
        check = recent.check
        return AuditStatus(
            checked_at=recent.checked_at,
            intact=check.ok,
            records=check.log.records,
            checkpoints=check.log.checkpoints,
            problems=[f"{p.kind}: {p.message}" for p in check.problems],
            witnesses=[
                Witness(
                    name=w.name,
                    location=w.location,
                    independent=w.independent,
                    last_seq=w.last_seq,
                )
                for w in check.witnesses
            ],
        )

    return api


def _line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


class ApiPrefix:
    """ASGI middleware: every path under `prefix` goes to the API app, whatever bytes it
    holds (a Starlette Mount does not match a path with a newline in it, and the caller
    would get the portal's plain-text 404 instead of the API's JSON error)."""

    def __init__(self, app: Any, *, api: FastAPI, prefix: str = "/api/v1") -> None:
        self.app = app
        self.api = api
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == self.prefix or path.startswith(self.prefix + "/"):
            scope["root_path"] = scope.get("root_path", "") + self.prefix
            await self.api(scope, receive, send)
            return
        await self.app(scope, receive, send)
