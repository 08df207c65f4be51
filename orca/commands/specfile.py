"""Deploy files: the service specs a JSON/TOML file or a project directory holds (`deploy`, `run`)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from orca.commands.common import UsageError

__all__ = ["load_services"]

def _read_doc(path: Path) -> Any:
    """Parse one JSON or TOML file; the suffix decides, and an unknown suffix tries JSON then TOML."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    if suffix != ".toml":
        try:
            return json.loads(text)
        except ValueError as exc:
            if suffix == ".json":
                raise UsageError(f"{path}: invalid JSON: {exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from exc


def _specs_from_doc(doc: Any, path: Path) -> list[dict[str, Any]]:
    """`{"services": [...]}` (also TOML `[[services]]`), `{"service": {...}}`, a single spec, or a list."""
    if isinstance(doc, list):
        specs = doc
    elif isinstance(doc, dict) and "services" in doc:
        specs = doc["services"]
        if not isinstance(specs, list):
            raise UsageError(f"{path}: 'services' must be a list of service specs")
    elif isinstance(doc, dict) and isinstance(doc.get("service"), dict) and len(doc) == 1:
        specs = [doc["service"]]
    elif isinstance(doc, dict):
        specs = [doc]
    else:
        raise UsageError(f"{path}: expected a service spec or {{\"services\": [...]}}")
    if not specs:
        raise UsageError(f"{path}: no services")
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise UsageError(f"{path}: service #{i + 1} is not a table/object")
    return [dict(s) for s in specs]


def load_services(path: str | Path) -> list[dict[str, Any]]:
    """The service specs a deploy file or directory holds, in a stable order.

    A directory is a project laid out one service per folder: every `services/*/service.toml` in it
    (or `*/service.toml` when the directory is itself the `services` folder). A service file without
    a `name` takes its folder's name, so renaming the folder is all it takes to copy a service.
    Validation is the server's job (one validator, in one place); this only finds and parses.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("services/*/service.toml")) or sorted(path.glob("*/service.toml"))
        if not files:
            raise UsageError(f"{path}: no services/*/service.toml in this directory")
        specs: list[dict[str, Any]] = []
        for file in files:
            found = _specs_from_doc(_read_doc(file), file)
            if len(found) != 1:
                raise UsageError(f"{file}: a service.toml holds exactly one service, found {len(found)}")
            found[0].setdefault("name", file.parent.name)
            specs.extend(found)
        return specs
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    return _specs_from_doc(_read_doc(path), path)
