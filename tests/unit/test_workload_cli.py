"""The workload verbs' pure parts and the shipped examples: every examples/ file is a valid deploy body,
`orca volumes ls` renders its table, `orca run` and `orca volumes` parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from orca import spec
from orca.cli import build_parser, load_services
from orca.commands.volumes import _rows

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.*"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_a_valid_deploy_body(path: Path) -> None:
    valid, errors = spec.validate_deploy_body({"services": load_services(path)})
    assert valid and not errors


def test_examples_cover_the_workload_fields() -> None:
    fields: set[str] = set()
    for path in EXAMPLES:
        for raw in load_services(path):
            fields |= set(raw)
            if isinstance(raw.get("health"), dict):
                fields |= {f"health.{k}" for k in raw["health"]}
    assert {"volumes", "kind", "schedule", "restart", "max_attempts", "registry_auth", "depends_on",
            "health.tcp", "health.exec", "health.http", "health.start_period_s"} <= fields


def test_volumes_table_and_verbs_parse() -> None:
    table = _rows([{"node": "n1", "service": "db", "slot": 0, "gen": 3, "volume": "data", "bound": True,
                    "name": "orca-abc-n1-db-0-g3-data"}])
    assert table.splitlines()[0].split() == ["NODE", "SERVICE", "SLOT", "GEN", "VOLUME", "BOUND", "NAME"]
    assert table.splitlines()[1].split() == ["n1", "db", "0", "3", "data", "yes", "orca-abc-n1-db-0-g3-data"]
    parser = build_parser()
    args = parser.parse_args(["volumes", "rm", "n1", "db", "--slot", "0", "--gen", "3"])
    assert (args.node, args.service, args.slot, args.gen) == ("n1", "db", 0, 3)
    args = parser.parse_args(["run", "-f", "job.toml", "--timeout", "30"])
    assert (args.file, args.timeout) == ("job.toml", 30.0)
