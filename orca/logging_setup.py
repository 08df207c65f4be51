"""How masters and agents log: level, text or JSON lines, optional access logs, and no secrets.

One `LogSettings` per process, from (highest first) the command line (`--log-level`, `--log-format`,
`--access-log`), the environment (`ORCA_LOG_LEVEL`, `ORCA_LOG_FORMAT`, `ORCA_ACCESS_LOG`), the config file
(`[log]` of a master, `[agent.log]` of an agent), then the defaults (info, text, no access log).

- text: `2026-12-01 02:00:00,123 master-1 INFO orca.master: message`, as before;
- json: one object per line (python-json-logger): `{"time", "level", "logger", "node", "message"}` plus
  `exc_info` on an exception and the access log's fields.

Secrets stay out whatever the level: every record passes `redact()` at the handler (bearer values, JWTs,
join tokens), so a token that slips into a message or an exception text from a library is masked too.
The access logs write the path without its query string and never a header.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import replace
from typing import IO, Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse
from pythonjsonlogger.json import JsonFormatter

from orca.config import LOG_FORMATS, LOG_LEVELS, LogSettings

__all__ = ["LogSettings", "LEVELS", "FORMATS", "configure", "redact", "resolve", "ApiAccessLogger",
           "API_ACCESS_LOGGER", "PROXY_ACCESS_LOGGER", "RedactingFilter"]

LEVELS, FORMATS = LOG_LEVELS, LOG_FORMATS
API_ACCESS_LOGGER = "orca.access.api"
PROXY_ACCESS_LOGGER = "orca.access.proxy"

_BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_JOIN_RE = re.compile(r"ORCAJOIN-[A-Za-z0-9._~+/=-]+")
_REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with bearer values, JWTs and join tokens replaced by "[redacted]"."""
    if "earer" not in text and "eyJ" not in text and "ORCAJOIN-" not in text and "EARER" not in text:
        return text
    text = _BEARER_RE.sub(lambda m: m.group(1) + _REDACTED, text)
    text = _JWT_RE.sub(_REDACTED, text)
    return _JOIN_RE.sub(_REDACTED, text)


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and in its exception text, before any formatter sees it."""

    _plain = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad %-format: keep the record as logging would show it
            return True
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._plain.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class _Json(JsonFormatter):
    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return redact(super().formatException(ei))


def _formatter(fmt: str, node: str) -> logging.Formatter:
    if fmt == "json":
        return _Json("%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={
            "asctime": "time", "levelname": "level", "name": "logger"}, static_fields={"node": node})
    return logging.Formatter(f"%(asctime)s {node} %(levelname)s %(name)s: %(message)s")


def _env_bool(value: str) -> bool | None:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    return None


def resolve(base: LogSettings, *, level: str | None = None, fmt: str | None = None,
            access_log: bool | None = None, environ: dict[str, str] | None = None) -> LogSettings:
    """Flags over environment over `base` (the config file's). Raises ValueError naming the bad value."""
    env = os.environ if environ is None else environ
    out = base
    for name, value, source in (("level", env.get("ORCA_LOG_LEVEL"), "ORCA_LOG_LEVEL"),
                                ("format", env.get("ORCA_LOG_FORMAT"), "ORCA_LOG_FORMAT"),
                                ("level", level, "--log-level"), ("format", fmt, "--log-format")):
        if value is None or value == "":
            continue
        allowed = LEVELS if name == "level" else FORMATS
        if value.lower() not in allowed:
            raise ValueError(f"{source}: expected one of {', '.join(allowed)}, got {value!r}")
        out = replace(out, **{name: value.lower()})
    raw = env.get("ORCA_ACCESS_LOG")
    if raw:
        flag = _env_bool(raw)
        if flag is None:
            raise ValueError(f"ORCA_ACCESS_LOG: expected true or false, got {raw!r}")
        out = replace(out, access_log=flag)
    if access_log is not None:
        out = replace(out, access_log=access_log)
    return out


def configure(settings: LogSettings, node: str, stream: IO[str] | None = None) -> logging.Handler:
    """Install the one root handler of this process (replacing earlier ones) and return it."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_formatter(settings.format, node))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    # PySyncObj logs every reconnection attempt at INFO; its warnings are what an operator needs.
    logging.getLogger("pysyncobj").setLevel(logging.WARNING)
    for name, on in ((API_ACCESS_LOGGER, settings.access_log), (PROXY_ACCESS_LOGGER, settings.proxy_access_log)):
        # Off means off even at --log-level debug; on means shown even at --log-level warning.
        logging.getLogger(name).setLevel(logging.INFO if on else logging.CRITICAL + 1)
    return handler


class ApiAccessLogger(AbstractAccessLogger):
    """aiohttp access logger: `remote method path status bytes seconds`, and the same as JSON fields."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        remote = request.remote or "-"
        size = response.body_length
        path = request.rel_url.raw_path  # still percent-encoded: no control character reaches the log
        self.logger.info("%s %s %s %d %d %.4f", remote, request.method, path, response.status, size, time,
                         extra={"remote": remote, "method": request.method, "path": path,
                                "status": response.status, "bytes": size, "duration_seconds": round(time, 6)})

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
