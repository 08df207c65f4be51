"""`orca token create|list|revoke`: API tokens (offline minting with the cluster secret, or by the leader)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orca.commands.common import UsageError, _client, _emit, _fmt_time, format_table
from orca.errors import OrcaError

__all__ = ["add_parsers", "ROLES", "cmd_token_create", "cmd_token_list", "cmd_token_revoke"]

ROLES = ("admin", "deployer", "viewer", "agent")


def _claims_dict(claims: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(claims) and not isinstance(claims, type):
        return dataclasses.asdict(claims)
    if isinstance(claims, dict):
        return dict(claims)
    return {k: v for k, v in vars(claims).items() if not k.startswith("_")}


def cmd_token_create(args: argparse.Namespace) -> int:
    if args.ttl is not None and args.ttl <= 0:
        raise UsageError("--ttl must be a positive number of seconds")
    if args.role == "agent" and not args.node:
        raise UsageError("--role agent needs --node ID: an agent token is bound to one node")
    if args.role != "agent" and args.node:
        raise UsageError("--node is only for --role agent")
    name = args.name or args.node  # an agent token is named after its node unless told otherwise
    if not name:
        raise UsageError("--name is required (who the token is for)")
    if args.secret_file:
        # Offline: how the first admin token of a fresh cluster is made (no bootstrap endpoint).
        from orca.auth import mint_token, signing_key

        try:
            secret = Path(args.secret_file).read_bytes().strip()
        except OSError as exc:
            raise UsageError(f"{args.secret_file}: {exc.strerror or exc}") from exc
        if not secret:
            raise UsageError(f"{args.secret_file}: the cluster secret is empty")
        try:
            token, claims = mint_token(signing_key(secret), role=args.role, name=name,
                                       now=time.time(), ttl_s=args.ttl, node=args.node,
                                       projects=args.project)
        except OrcaError as exc:  # e.g. a name the token format does not allow
            raise UsageError(exc.message) from exc
        result: dict[str, Any] = {"token": token, **_claims_dict(claims)}
    else:
        with _client(args) as client:
            scope = {"projects": args.project} if args.project else {}
            result = client.create_token(args.role, name, args.ttl, node=args.node, **scope)
    # Only the token on stdout, so `TOKEN=$(orca token create ...)` works.
    _emit(args, result, lambda: str(result["token"]), sys.stdout)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tokens = client.list_tokens()
    rows = [[t.get("jti"), t.get("name", t.get("sub")), t.get("role"), t.get("node") or "-",
             ",".join(t.get("projects") or []) or "-",
             _fmt_time(t.get("created_at", t.get("iat"))), _fmt_time(t.get("expires_at", t.get("exp"))),
             bool(t.get("revoked"))] for t in tokens]
    _emit(args, {"tokens": tokens},
          lambda: format_table(["JTI", "NAME", "ROLE", "NODE", "PROJECTS", "ISSUED", "EXPIRES", "REVOKED"], rows),
          sys.stdout)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.revoke_token(args.jti)
    _emit(args, result, lambda: f"revoked {args.jti}", sys.stdout)
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("token", parents=[common], help="create, list and revoke API tokens")
    tokens = p.add_subparsers(dest="token_verb", metavar="ACTION", required=True)
    p = verb(tokens, "create", cmd_token_create,
             "mint a token: offline with --secret-file, else by the leader (recorded, revocable)")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", help="who the token is for (its `sub`); an agent token defaults to its node")
    p.add_argument("--node", metavar="ID", help="role agent only, required: the one node id the token may act for")
    p.add_argument("--ttl", type=float, metavar="SECONDS", help="expiry (default: none)")
    p.add_argument("--secret-file", metavar="F", help="cluster secret file: mint offline, no API call")
    p.add_argument("--project", action="append", metavar="P",
                   help="deployer only, repeatable: the token writes only services of these projects and may "
                        "reference secrets granted to them (unscoped deployers: secrets of all projects only)")
    verb(tokens, "list", cmd_token_list, "list recorded tokens")
    p = verb(tokens, "revoke", cmd_token_revoke, "revoke a recorded token")
    p.add_argument("jti")
