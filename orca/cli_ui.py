"""`orca ui`: open the web console in a browser, already signed in with the CLI's token.

The link is `MASTER/ui/#token=TOKEN`: the part after `#` never leaves the browser (it is not sent to
the server, so it is in no access log), and the console moves the token into the tab's sessionStorage
and out of the address bar at once. The token is checked against the cluster first, so a wrong or
revoked one fails here with the server's message instead of on a sign-in page. The full link is printed
only with `--print` (it holds the token: think before pasting it anywhere).
"""

from __future__ import annotations

import argparse
import sys
import webbrowser
from typing import Any

from orca.client import Client

__all__ = ["add_arguments", "cmd_ui", "console_url"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--print", dest="print_url", action="store_true",
                   help="print the signed-in link (it contains the token) instead of opening a browser")


def console_url(api: str, token: str) -> str:
    return f"{api.rstrip('/')}/ui/#token={token}"


def _first_answering(apis: list[str], token: str) -> tuple[str, dict[str, Any]]:
    """The first master that answers, and who the token is there (errors: the last master's)."""
    last: Exception | None = None
    for api in apis:
        try:
            with Client([api], token, timeout=5, retries=0) as client:
                return api, client.request("GET", "/api/v1/cluster/info")
        except Exception as err:  # noqa: BLE001 - try the next master; the last error is raised below
            last = err
    assert last is not None
    raise last


def cmd_ui(args: argparse.Namespace) -> int:
    from orca.cli import UsageError, resolve_token  # here: orca.cli imports this module

    token = resolve_token(args.token)
    if not token:
        raise UsageError("no token: pass --token, set ORCA_TOKEN, or put one in ~/.orca/token")
    apis = [a.strip() for a in str(args.api).split(",") if a.strip()]
    api, _ = _first_answering(apis, token)
    url = console_url(api, token)
    if args.print_url:
        print(url)
        return 0
    if not webbrowser.open(url):
        print(f"orca: no browser to open here; open {api.rstrip('/')}/ui/ and sign in, or run "
              "`orca ui --print` for a signed-in link", file=sys.stderr)
        return 1
    print(f"opened {api.rstrip('/')}/ui/ in your browser, signed in")
    return 0
