"""docs/cli.md and the examples in `--help`: the reference is what scripts/gen-cli-docs.py writes from the
parser (stale -> fail), every verb has an example, and every example parses with today's verbs and flags."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from types import ModuleType

import pytest

from orca import cli
from orca.commands.examples import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen-cli-docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _verbs() -> list[str]:
    return [path for path, sub in cli.verb_parsers(cli.build_parser()) if sub.get_default("handler") is not None]


def test_docs_cli_md_is_what_the_generator_writes() -> None:
    expected = _generator().render()
    actual = (ROOT / "docs" / "cli.md").read_text()
    assert actual == expected, "docs/cli.md is stale: run scripts/gen-cli-docs.py and commit the result"


def test_every_verb_is_in_the_reference_with_an_example() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    verbs = _verbs()
    assert len(verbs) > 50
    missing = [v for v in verbs if not EXAMPLES.get(v)]
    assert not missing, f"verbs without an example in orca/commands/examples.py: {missing}"
    undocumented = [v for v in verbs if f"\n### orca {v}\n" not in doc]
    assert not undocumented, f"verbs missing from docs/cli.md (run scripts/gen-cli-docs.py): {undocumented}"
    assert not set(EXAMPLES) - set(verbs), "examples for verbs that do not exist"


def _example_argv(line: str) -> list[str]:
    """The `orca ...` command of an example, cut at a pipe or redirection."""
    words = shlex.split(line.replace("<(", "( ").replace(")", " )"))
    start = words.index("orca")
    argv = []
    for word in words[start + 1:]:
        if word in ("|", ">", ")") or word.startswith(">"):
            break
        argv.append(word)
    return argv


@pytest.mark.parametrize("verb,line", [(v, line) for v, lines in EXAMPLES.items() for line in lines])
def test_every_example_parses(verb: str, line: str) -> None:
    argv = _example_argv(line)
    args = cli.build_parser().parse_args(argv)  # SystemExit (a failed test) when a flag or verb is gone
    assert hasattr(args, "handler") or args.show_version


def test_help_ends_with_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["logs", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("\n".join(f"  {line}" for line in EXAMPLES["logs"]))
    assert "\nexamples:\n" in out


def test_every_help_renders() -> None:
    """Every verb's --help formats (a stray % in a help text used to crash `orca scaling set --help`)."""
    for path, sub in cli.verb_parsers(cli.build_parser()):
        assert sub.format_help(), path
