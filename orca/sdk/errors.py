"""What a failed call raises (`ApiError`), and how the SDK reads the server's JSON error envelope."""

from __future__ import annotations

import http.client
import json as _json
from typing import Any

__all__ = ["ApiError", "error_from_response", "field", "json_message"]


class ApiError(Exception):
    """A request that failed: the server's error envelope, or status 0 when no master answered.

    `code` is the machine-readable contract (`SERVICE_NOT_FOUND`, `CLUSTER_NOT_READY`, ...); `message`
    is the human text; `details` the envelope's details; `body` the decoded (or raw) response body.
    """

    def __init__(self, status: int, code: str, message: str, details: Any = None, body: Any = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.body = body

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def error_from_response(status: int, data: bytes) -> ApiError:
    """Turn an error response into an ApiError; a body that is not the envelope becomes `HTTP_<status>`."""
    text = data.decode("utf-8", "replace")
    try:
        body = _json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict) and ("code" in body or "error" in body):
        err = body.get("error")
        code = body.get("code")
        if isinstance(err, dict):  # the state machine's value shape, should it ever leak through
            code = code or err.get("code")
            err = err.get("message")
        message = str(err) if err is not None else http.client.responses.get(status, "error")
        return ApiError(status, str(code or f"HTTP_{status}"), message, body.get("details"), body)
    message = text.strip()[:500] or http.client.responses.get(status, "error")
    return ApiError(status, f"HTTP_{status}", message, None, text)


def field(response: Any, key: str) -> Any:
    """`response[key]`, or an ApiError naming the mismatch (a KeyError would be a traceback in the CLI)."""
    if isinstance(response, dict) and key in response:
        return response[key]
    raise ApiError(200, "INVALID_RESPONSE", f"response has no {key!r}", None, response)



def json_message(message: str | bytes) -> dict[str, Any]:
    try:
        value = _json.loads(message)
    except ValueError as exc:
        raise ApiError(0, "INVALID_RESPONSE", f"stream message is not JSON: {message[:200]!r}", None,
                       message) from exc
    if not isinstance(value, dict):
        raise ApiError(0, "INVALID_RESPONSE", "stream message is not a JSON object", None, value)
    return value

