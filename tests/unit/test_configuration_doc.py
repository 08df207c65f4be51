"""docs/configuration.md (generated from config.example.toml) names exactly the keys the loader accepts.

The loader's tables are closed sets of keys (`orca.config._Table(..., allowed)`); loading the example
master config and the example agent block with a spy on `_Table` collects every table the loader opens
and the keys it allows there. Those must be the keys `config.example.toml` documents (so
docs/configuration.md, generated from it, documents them all), and loading the example strictly proves
no documented key is unknown. `python -m orca.reference --check` (tests/unit/test_reference.py) keeps the
generated file fresh.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from orca import config
from orca.reference import example_keys

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def _agent_block(text: str) -> str:
    block = text.split("# AGENT-EXAMPLE-BEGIN\n", 1)[1].split("# AGENT-EXAMPLE-END", 1)[0]
    return "\n".join(line[2:] if line.startswith("# ") else "" for line in block.splitlines()) + "\n"


def _loader_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> set[str]:
    opened: list[tuple[str, tuple[str, ...]]] = []
    original = config._Table.__init__

    def spy(self: Any, file: str, name: str, data: Any, allowed: Any) -> None:
        allowed = tuple(allowed)
        opened.append((re.sub(r"\[\d+\]", "[]", name), allowed))
        original(self, file, name, data, allowed)

    monkeypatch.setattr(config._Table, "__init__", spy)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cluster.secret").write_text("s" * 32)
    (tmp_path / "data" / "worker-1.token").write_text("not-a-jwt-token")
    text = EXAMPLE.read_text()
    config.load_master_config(EXAMPLE)
    agent_file = tmp_path / "agent.toml"
    agent_file.write_text(_agent_block(text))
    config.load_agent_config(agent_file)
    keys = set()
    for name, allowed in opened:
        for key in allowed:
            keys.add(f"{name}.{key}" if name else key)
    return keys


def _covered(key: str) -> str:
    """`raft.peers[].id` is documented by the `raft.peers` row (an array of inline tables)."""
    return key.split("[]", 1)[0]


def test_the_example_documents_exactly_the_loaders_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    loader = {_covered(k) for k in _loader_keys(monkeypatch, tmp_path)}
    tables = {k.rsplit(".", 1)[0] for k in loader if "." in k}
    loader_leaves = loader - {k for k in loader if k in tables}
    documented = {key for key, value, _, _ in example_keys(EXAMPLE.read_text()) if value != ""}
    assert loader_leaves - documented == set(), "keys the loader accepts but config.example.toml does not document"
    assert documented - loader == set(), "keys config.example.toml documents but the loader does not know"


def test_every_documented_key_has_a_default_or_says_required() -> None:
    for key, value, default, text in example_keys(EXAMPLE.read_text()):
        if value == "":
            continue
        assert text, key
        assert default or key in ("agent.ca_file",), key


def test_the_reference_has_a_row_per_key() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for key, value, _, _ in example_keys(EXAMPLE.read_text()):
        if value:
            assert f"| `{key}` |" in doc, key
