"""The client configuration: named contexts in `~/.orca/config.toml` (like kubectl's kubeconfig).

    current = "local"

    [contexts.local]
    endpoints = ["http://127.0.0.1:6880", "http://127.0.0.1:6882", "http://127.0.0.1:6884"]
    token_file = "/home/me/orca/data/admin.token"
    ca_file = ""          # reserved for TLS to the masters: the CA that signs their certificates

A context names how to reach one cluster: every master's API URL (so the CLI survives any one master
being down), where the token is, and which CA to trust. `ORCA_CONFIG` moves the file; `ORCA_CONTEXT` or
`--context` picks a context other than `current`. What is given explicitly always wins over the context:
`--api`/`ORCA_API` over `endpoints`, `--token`/`ORCA_TOKEN` over `token_file`.

The file holds no secret itself (a token *file* path, not the token), but it says where the admin token
is, so it is written 0600 in a 0700 directory, atomically (a crash never leaves half a file).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w

__all__ = ["ClientConfig", "Context", "ConfigFileError", "Target", "DEFAULT_API", "config_path", "home_token",
           "resolve", "NAME_MAX", "ENDPOINTS_MAX"]

NAME_MAX = 64
ENDPOINTS_MAX = 16
_FILE_MAX = 1 << 20


class ConfigFileError(Exception):
    """The client config file cannot be read or is malformed: one line naming the file and the key."""


def config_path() -> Path:
    """`$ORCA_CONFIG`, else `~/.orca/config.toml`."""
    env = os.environ.get("ORCA_CONFIG", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".orca" / "config.toml"


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url.rstrip("/")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX or not all(
            c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"context name must be 1-{NAME_MAX} letters, digits, '-', '_' or '.': {name!r}")
    return name


@dataclass
class Context:
    name: str
    endpoints: list[str] = field(default_factory=list)
    token_file: str = ""
    ca_file: str = ""

    def token(self) -> str | None:
        """The token in `token_file` (stripped), or None when there is no file or it is empty."""
        if not self.token_file:
            return None
        try:
            return Path(self.token_file).expanduser().read_text().strip() or None
        except OSError:
            return None

    def as_toml(self) -> dict[str, Any]:
        return {"endpoints": list(self.endpoints), "token_file": self.token_file, "ca_file": self.ca_file}


@dataclass
class ClientConfig:
    path: Path
    current: str = ""
    contexts: dict[str, Context] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> ClientConfig:
        """Read the file; a missing file is an empty config, a malformed one a ConfigFileError."""
        path = path or config_path()
        try:
            raw = path.read_bytes()[:_FILE_MAX + 1]
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise ConfigFileError(f"{path}: {exc.strerror or exc}") from exc
        if len(raw) > _FILE_MAX:
            raise ConfigFileError(f"{path}: larger than {_FILE_MAX} bytes")
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigFileError(f"{path}: invalid TOML: {exc}") from exc
        return cls._from_doc(path, doc)

    @classmethod
    def _from_doc(cls, path: Path, doc: dict[str, Any]) -> ClientConfig:
        current = doc.get("current", "")
        if not isinstance(current, str):
            raise ConfigFileError(f"{path}: current: expected a context name")
        contexts = doc.get("contexts", {})
        if not isinstance(contexts, dict):
            raise ConfigFileError(f"{path}: contexts: expected a table of contexts")
        out: dict[str, Context] = {}
        for name, body in contexts.items():
            where = f"{path}: contexts.{name}"
            if not isinstance(body, dict):
                raise ConfigFileError(f"{where}: expected a table")
            unknown = set(body) - {"endpoints", "token_file", "ca_file"}
            if unknown:
                raise ConfigFileError(f"{where}: unknown key {sorted(unknown)[0]!r}")
            endpoints = body.get("endpoints", [])
            if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints) \
                    or len(endpoints) > ENDPOINTS_MAX:
                raise ConfigFileError(f"{where}.endpoints: expected a list of at most {ENDPOINTS_MAX} URLs")
            for key in ("token_file", "ca_file"):
                if not isinstance(body.get(key, ""), str):
                    raise ConfigFileError(f"{where}.{key}: expected a path (string)")
            try:
                _check_name(name)
                urls = [_check_url(e) for e in endpoints]
            except ValueError as exc:
                raise ConfigFileError(f"{where}: {exc}") from exc
            out[name] = Context(name, urls, body.get("token_file", ""), body.get("ca_file", ""))
        return cls(path, current, out)

    def context(self, name: str | None = None) -> Context | None:
        """The named context (ConfigFileError when it does not exist), else the current one (or None)."""
        if name:
            if name not in self.contexts:
                known = ", ".join(sorted(self.contexts)) or "none"
                raise ConfigFileError(f"{self.path}: no context {name!r} (known: {known})")
            return self.contexts[name]
        return self.contexts.get(self.current) if self.current else None

    def set(self, name: str, endpoints: list[str], token_file: str = "", ca_file: str = "") -> Context:
        """Create or replace a context (validated); does not save."""
        _check_name(name)
        urls: list[str] = []
        for url in endpoints:
            url = _check_url(url.strip())
            if url not in urls:
                urls.append(url)
        if not urls:
            raise ValueError("a context needs at least one endpoint")
        if len(urls) > ENDPOINTS_MAX:
            raise ValueError(f"at most {ENDPOINTS_MAX} endpoints")
        ctx = Context(name, urls, token_file, ca_file)
        self.contexts[name] = ctx
        return ctx

    def save(self) -> None:
        """Write atomically, 0600, in a 0700 directory."""
        doc: dict[str, Any] = {"current": self.current,
                               "contexts": {n: c.as_toml() for n, c in sorted(self.contexts.items())}}
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(tomli_w.dumps(doc).encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


DEFAULT_API = "http://127.0.0.1:6880"


@dataclass(frozen=True)
class Target:
    """Where a client goes and with what: the outcome of flags, environment and the context."""

    endpoints: list[str]
    token: str | None
    ca_file: str | None
    context: str | None       # the context used, if any
    endpoints_from: str       # "flag", "env", "context" or "default": for messages


def home_token() -> str | None:
    """`~/.orca/token` (what the bootstrap copies the admin token to), stripped; None if absent."""
    try:
        return (Path.home() / ".orca" / "token").read_text().strip() or None
    except OSError:
        return None


def resolve(api: str | None = None, token: str | None = None, context: str | None = None,
            env: dict[str, str] | None = None) -> Target:
    """Flags, then the environment (`ORCA_API`, `ORCA_TOKEN`, `ORCA_CONTEXT`), then the context, then
    the defaults (`DEFAULT_API`, `~/.orca/token`). The config file is read only when something is left
    to take from it, so a broken file never gets in the way of explicit flags."""
    env = dict(os.environ) if env is None else env
    api = (api or "").strip() or None
    token = (token or "").strip() or None
    env_api = env.get("ORCA_API", "").strip() or None
    env_token = env.get("ORCA_TOKEN", "").strip() or None
    name = (context or "").strip() or env.get("ORCA_CONTEXT", "").strip() or None
    ctx: Context | None = None
    if name or not (api or env_api) or not (token or env_token):
        ctx = ClientConfig.load().context(name)
    if api or env_api:
        endpoints, source = (api or env_api or "").split(","), "flag" if api else "env"
    elif ctx is not None and ctx.endpoints:
        endpoints, source = list(ctx.endpoints), "context"
    else:
        endpoints, source = [DEFAULT_API], "default"
    chosen = token or env_token or (ctx.token() if ctx is not None else None) or home_token()
    return Target([e.strip() for e in endpoints if e.strip()], chosen, (ctx.ca_file if ctx else "") or None,
                  ctx.name if ctx is not None else None, source)
