"""The one error hierarchy of orca; the HTTP layer maps it to the JSON envelope in one place.

    OrcaError (500 INTERNAL)
    ├── Invalid            400 VALIDATION_ERROR   (InvalidSpec: 400 INVALID_SPEC)
    ├── Unauthorized       401 UNAUTHORIZED
    ├── Forbidden          403 FORBIDDEN
    ├── NotFound           404 NOT_FOUND          (ServiceNotFound, NodeNotFound)
    ├── MethodNotAllowed   405 METHOD_NOT_ALLOWED
    ├── Conflict           409 CONFLICT           (StaleLeader: 409 STALE_LEADER)
    ├── PayloadTooLarge    413 PAYLOAD_TOO_LARGE
    ├── RateLimited        429 RATE_LIMIT_EXCEEDED
    ├── NotLeader          307 NOT_LEADER         (carries the leader's API URL)
    └── NotReady           503 CLUSTER_NOT_READY  (no leader, no quorum, or a write that timed out)

Errors are also values: the state machine returns `{"error": {"code", "message", "details"}}`
instead of raising, and `from_result` turns that back into the matching exception.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "OrcaError", "Invalid", "InvalidSpec", "Unauthorized", "Forbidden", "NotFound", "ServiceNotFound",
    "NodeNotFound", "MethodNotAllowed", "Conflict", "StaleLeader", "PayloadTooLarge", "RateLimited",
    "NotLeader", "NotReady", "from_code",
]


class OrcaError(Exception):
    """Base of every error a client may see; `code` and `status` are part of the API contract."""

    status = 500
    code = "INTERNAL"

    def __init__(self, message: str, details: dict[str, Any] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def as_value(self) -> dict[str, Any]:
        """The shape the state machine returns (and stores for idempotent replays)."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class Invalid(OrcaError):
    status = 400
    code = "VALIDATION_ERROR"


class InvalidSpec(Invalid):
    code = "INVALID_SPEC"


class Unauthorized(OrcaError):
    status = 401
    code = "UNAUTHORIZED"


class Forbidden(OrcaError):
    status = 403
    code = "FORBIDDEN"


class NotFound(OrcaError):
    status = 404
    code = "NOT_FOUND"


class ServiceNotFound(NotFound):
    code = "SERVICE_NOT_FOUND"


class NodeNotFound(NotFound):
    code = "NODE_NOT_FOUND"


class MethodNotAllowed(OrcaError):
    status = 405
    code = "METHOD_NOT_ALLOWED"


class Conflict(OrcaError):
    status = 409
    code = "CONFLICT"


class StaleLeader(Conflict):
    code = "STALE_LEADER"


class PayloadTooLarge(OrcaError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class RateLimited(OrcaError):
    status = 429
    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, retry_after_s: float, details: dict[str, Any] | None = None):
        super().__init__(message, details)
        self.retry_after_s = retry_after_s


class NotLeader(OrcaError):
    status = 307
    code = "NOT_LEADER"

    def __init__(self, leader_url: str):
        super().__init__(f"Request must be sent to leader node: {leader_url}", {"leader": leader_url})
        self.leader_url = leader_url


class NotReady(OrcaError):
    status = 503
    code = "CLUSTER_NOT_READY"


_BY_CODE: dict[str, type[OrcaError]] = {
    cls.code: cls
    for cls in (Invalid, InvalidSpec, Unauthorized, Forbidden, NotFound, ServiceNotFound, NodeNotFound,
                MethodNotAllowed, Conflict, StaleLeader, PayloadTooLarge, NotReady)
}


def from_code(code: str, message: str, details: dict[str, Any] | None = None) -> OrcaError:
    """Rebuild the exception a state-machine error value (or an HTTP error body) stands for."""
    cls = _BY_CODE.get(code, OrcaError)
    err = cls(message, details)
    err.code = code
    return err
