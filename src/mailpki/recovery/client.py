"""How the enrollment side talks to the Key Recovery Service: one interface, two ways.

`LocalRecoveryClient` calls a service in this process (the embedded default);
`HttpRecoveryClient` sends the very same signed messages to `recovery-service serve`.
Either way the caller holds no key of the service's and gets only what a signed,
approved message earns.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from mailpki.errors import InputError, RecoveryError, RecoveryRefused
from mailpki.recovery.service import RecoveryService
from mailpki.recovery.witness import witness_of

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MESSAGES_PATH = "/v1/messages"
INFO_PATH = "/v1/info"
WITNESS_PATH = "/v1/witness"


class RecoveryClient(Protocol):
    def info(self) -> dict[str, str]:
        """service_id, name, oaep_hash and the transport public key (PEM)."""
        ...

    def send(self, message: bytes) -> dict[str, Any]:
        """Deliver one signed message; RecoveryRefused if the service says no."""
        ...

    def witness(self, submission: bytes) -> dict[str, Any]:
        """Hand one audit checkpoint in; RecoveryRefused if it does not extend the chain."""
        ...

    def witnessed(self, instance: str, after: int = 0) -> dict[str, Any]:
        """One page of the checkpoint chain the service holds for ``instance``."""
        ...

    @property
    def is_local(self) -> bool: ...

    def local_service(self) -> RecoveryService:
        """The in-process service, for unsigned local queries; RecoveryError when remote."""
        ...

    def close(self) -> None: ...


class LocalRecoveryClient:
    def __init__(self, home: Path) -> None:
        self.home = home
        self._service: RecoveryService | None = None

    @property
    def is_local(self) -> bool:
        return True

    def local_service(self) -> RecoveryService:
        if self._service is None:
            self._service = RecoveryService.open(self.home)
        return self._service

    def info(self) -> dict[str, str]:
        return self.local_service().info()

    def send(self, message: bytes) -> dict[str, Any]:
        return self.local_service().handle(message)

    def witness(self, submission: bytes) -> dict[str, Any]:
        return witness_of(self.local_service()).accept(submission)

    def witnessed(self, instance: str, after: int = 0) -> dict[str, Any]:
        return witness_of(self.local_service()).copy(instance, after=after)

    def close(self) -> None:
        if self._service is not None:
            self._service.close()


class HttpRecoveryClient:
    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"the recovery service URL must be http(s)://, not {url[:60]!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    @property
    def is_local(self) -> bool:
        return False

    def local_service(self) -> RecoveryService:
        raise RecoveryError(
            f"the recovery service runs apart ({self.url}): sign the query with an "
            "admin's or auditor's PKCS#12 (--p12, --password-file)"
        )

    def info(self) -> dict[str, str]:
        return self._call(urllib.request.Request(self.url + INFO_PATH, method="GET"))  # noqa: S310

    def send(self, message: bytes) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url + MESSAGES_PATH,
            data=message,
            method="POST",
            headers={"Content-Type": "application/pkcs7-mime"},
        )
        return self._call(request)

    def witness(self, submission: bytes) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url + WITNESS_PATH,
            data=submission,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        return self._call(request)

    def witnessed(self, instance: str, after: int = 0) -> dict[str, Any]:
        if not re.fullmatch(r"[0-9a-f]{64}", instance):
            raise InputError("an instance id is 64 hex digits")
        url = f"{self.url}{WITNESS_PATH}/{instance}?after={int(after)}"
        return self._call(urllib.request.Request(url, method="GET"))  # noqa: S310

    def close(self) -> None:
        pass

    def _call(self, request: urllib.request.Request) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = _error_of(exc.read(64 * 1024))
            if exc.code in (400, 403, 404):
                raise RecoveryRefused(detail or f"refused (HTTP {exc.code})") from None
            raise RecoveryError(
                f"the recovery service at {self.url} failed: HTTP {exc.code} {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RecoveryError(
                f"cannot reach the recovery service at {self.url}: {reason}"
            ) from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise RecoveryError("the recovery service's answer is too large")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RecoveryError("the recovery service did not answer with JSON") from None
        if not isinstance(data, dict):
            raise RecoveryError("the recovery service's answer is not a JSON object")
        return data


def _error_of(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    return str(data.get("error", ""))[:500] if isinstance(data, dict) else ""


def client_for(*, url: str, home: Path | None) -> RecoveryClient:
    if url:
        return HttpRecoveryClient(url)
    if home is None:
        raise InputError("no recovery service configured: set recovery.url or recovery.home")
    return LocalRecoveryClient(home)
