"""`orca ui`: opens the signed-in link in a browser and never prints the token unless asked to."""

from __future__ import annotations

from typing import Any

import pytest

from orca import cli
from orca.commands import ui as cli_ui

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    urls: list[str] = []
    monkeypatch.setattr(cli_ui, "signed_in_base", lambda client: client.apis[-1])
    monkeypatch.setattr(cli_ui.webbrowser, "open", lambda url: urls.append(url) or True)
    monkeypatch.setenv("ORCA_TOKEN", TOKEN)
    return urls


def test_opens_the_signed_in_link_without_printing_the_token(opened: list[str], capsys: Any) -> None:
    assert cli.main(["--api", "http://127.0.0.1:1,http://127.0.0.1:2/", "ui"]) == 0
    assert opened == [f"http://127.0.0.1:2/ui/#token={TOKEN}"]
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and "http://127.0.0.1:2/ui/" in out.out


def test_print_prints_the_link_and_opens_nothing(opened: list[str], capsys: Any) -> None:
    assert cli.main(["--api", "http://127.0.0.1:1", "ui", "--print"]) == 0
    assert capsys.readouterr().out.strip() == f"http://127.0.0.1:1/ui/#token={TOKEN}" and opened == []


def test_no_browser_says_what_to_do_without_the_token(opened: list[str], capsys: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_ui.webbrowser, "open", lambda url: False)
    assert cli.main(["--api", "http://127.0.0.1:1", "ui"]) == 1
    out = capsys.readouterr()
    assert "--print" in out.err and TOKEN not in out.out + out.err
