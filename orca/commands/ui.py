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
from collections.abc import Callable
from typing import Any

from orca.client import Client
from orca.commands.common import UsageError, _client

__all__ = ["add_parsers", "cmd_ui", "console_url", "signed_in_base"]


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verb(verbs, "ui", cmd_ui, "open the web console in a browser, signed in")
    p.add_argument("--print", dest="print_url", action="store_true",
                   help="print the signed-in link (it contains the token) instead of opening a browser")


def console_url(api: str, token: str) -> str:
    return f"{api.rstrip('/')}/ui/#token={token}"


def signed_in_base(client: Client) -> str:
    """Check the token against the cluster (the server's refusal is raised as is) and return the URL of
    the master that answered: the console is served by every master, so the one that answers will do."""
    client.request("GET", "/api/v1/cluster/info")
    return str(getattr(client, "_last_good", None) or client.apis[0]).rstrip("/")


def cmd_ui(args: argparse.Namespace) -> int:
    with _client(args) as client:  # the masters and the token, found the way every verb finds them
        if not client.token:
            raise UsageError("no token: pass --token, set ORCA_TOKEN, or put one in ~/.orca/token")
        api = signed_in_base(client)
        url = console_url(api, client.token)
    if args.print_url:
        print(url)
        return 0
    if not webbrowser.open(url):
        print(f"orca: no browser to open here; open {api}/ui/ and sign in, or run "
              "`orca ui --print` for a signed-in link", file=sys.stderr)
        return 1
    print(f"opened {api}/ui/ in your browser, signed in")
    return 0
