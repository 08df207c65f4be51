"""`orca cluster ...`: masters, leader, membership changes, join tokens and the cluster CA."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orca.commands.common import UsageError, _cell, _client, _emit, _fmt_time, _global_options, format_table

__all__ = ["add_parsers", "cluster_info_text", "members_text", "cmd_cluster_info", "cmd_cluster_leader",
           "cmd_cluster_members", "cmd_cluster_status"]

def cluster_info_text(info: dict[str, Any]) -> str:
    """Masters table, then leader/term/commit index, then nodes when there are any."""
    masters = info.get("masters") or []
    parts = [format_table(["ID", "API", "STATE", "HEALTHY", "LAST_CONTACT"],
                          [[m.get("id"), m.get("api_url"), m.get("state"), m.get("healthy"),
                            m.get("last_contact")] for m in masters])]
    leader = info.get("leader")
    if isinstance(leader, dict):
        leader = leader.get("id") or leader.get("leader_id") or leader.get("api_url")
    commit = info.get("commit_index", info.get("commit"))
    parts.append(f"leader: {_cell(leader)}  term: {_cell(info.get('term'))}  commit index: {_cell(commit)}")
    nodes = info.get("nodes") or []
    if nodes:
        parts.append(format_table(["NODE", "ADDRESS", "STATUS", "ELIGIBILITY", "ALLOCATIONS"],
                                  [[n.get("id"), n.get("address"), n.get("status"), n.get("eligibility"),
                                    n.get("allocations") if not isinstance(n.get("allocations"), list)
                                    else len(n["allocations"])] for n in nodes]))
    return "\n\n".join(parts)


def cmd_cluster_info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.cluster_info()
    _emit(args, info, lambda: cluster_info_text(info), sys.stdout)
    return 0


def cmd_cluster_leader(args: argparse.Namespace) -> int:
    with _client(args) as client:
        leader = client.cluster_leader()

    def human() -> str:
        ident = leader.get("leader_id", leader.get("id", leader.get("leader")))
        url = leader.get("api_url", leader.get("leader_url", leader.get("url")))
        return f"leader: {_cell(ident)}  api: {_cell(url)}  term: {_cell(leader.get('term'))}"

    _emit(args, leader, human, sys.stdout)
    return 0


def members_text(result: dict[str, Any]) -> str:
    rows = []
    for m in result.get("members", []):
        note = "" if m.get("in_raft") and m.get("listed") else (" (not in Raft yet)" if m.get("listed")
                                                                 else " (not listed)")
        contact = m.get("last_contact_s")
        rows.append([m.get("id"), m.get("raft"), m.get("api"), f"{m.get('role')}{note}",
                     "-" if contact is None else f"{contact:.2f}s ago", "-" if m.get("lag") is None else m["lag"]])
    return format_table(["ID", "RAFT", "API", "ROLE", "LAST CONTACT", "LAG"], rows)


def cmd_cluster_members(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.members()
    _emit(args, result, lambda: members_text(result), sys.stdout)
    return 0


def cmd_cluster_add_master(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.add_master(args.id, args.raft, args.master_api)
    _emit(args, result, lambda: (f"added master {args.id} (raft {args.raft}, api {args.master_api}) in "
                                 f"{result['seconds']} s"
                                 if result.get("added") else f"{args.id} is already a member"), sys.stdout)
    return 0


def cmd_cluster_remove_master(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.remove_master(args.id)
    _emit(args, result, lambda: f"removed master {args.id} ({result.get('raft')}); stop its process now",
          sys.stdout)
    return 0


def cmd_cluster_join_token(args: argparse.Namespace) -> int:
    if args.ttl is not None and args.ttl < 0:
        raise UsageError("--ttl must be a number of seconds (0: no expiry)")
    ttl = None if args.ttl == 0 else (86400.0 if args.ttl is None else args.ttl)
    with _client(args) as client:
        result = client.create_join_token(args.role, ttl_s=ttl, node=args.node, rotate=args.rotate)
    if result.get("rotated"):
        print(f"revoked {len(result['rotated'])} unused join token(s): {', '.join(result['rotated'])}",
              file=sys.stderr)
    # Only the token on stdout, so `orca cluster join-token worker >worker.token` works.
    _emit(args, result, lambda: str(result["token"]), sys.stdout)
    return 0


def cmd_cluster_init(args: argparse.Namespace) -> int:
    from orca.master.tls_manager import init_local_ca  # lazy: keeps `orca status` light

    fingerprint, created = init_local_ca(Path(args.data_dir))
    print(f"{'created' if created else 'kept the existing'} cluster CA {fingerprint} in "
          f"{Path(args.data_dir) / 'tls'} (the first leader records it in the replicated state)")
    return 0


def cmd_cluster_ca_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.request("GET", "/api/v1/cluster/ca")
    if args.pem:
        sys.stdout.write(result["bundle"])
        return 0
    rows = [[c["fingerprint"], "yes" if c["current"] else "no (trusted until the rotation is finished)",
             _fmt_time(c.get("not_after"))] for c in result.get("cas", [])]
    _emit(args, result, lambda: f"{result['fingerprint']}\n\n"
          + format_table(["FINGERPRINT (SHA-256)", "CURRENT", "NOT AFTER"], rows), sys.stdout)
    return 0


def cmd_cluster_ca_rotate(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.request("POST", "/api/v1/cluster/ca/rotate", json={})
    _emit(args, result, lambda: f"new cluster CA {result['current']}; {len(result['trusted'])} CA(s) trusted until "
          "`orca cluster ca finish` (masters and nodes renew their certificates meanwhile)", sys.stdout)
    return 0


def cmd_cluster_ca_finish(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.request("POST", "/api/v1/cluster/ca/finish", json={"force": True} if args.force else {})
    _emit(args, result, lambda: f"cluster CA {result['current']}; no longer trusted: "
          f"{', '.join(result.get('retired') or []) or 'none'}", sys.stdout)
    return 0


def cmd_cluster_join_tokens(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tokens = client.list_join_tokens()
    rows = [[t.get("id"), t.get("role"), t.get("node") or "any", _fmt_time(t.get("created_at")),
             _fmt_time(t.get("expires_at")), t.get("used_by") or "-", bool(t.get("revoked"))] for t in tokens]
    _emit(args, {"join_tokens": tokens},
          lambda: format_table(["ID", "ROLE", "NODE", "CREATED", "EXPIRES", "USED BY", "REVOKED"], rows), sys.stdout)
    return 0


def cmd_cluster_revoke_join_token(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.revoke_join_token(args.id)
    _emit(args, result, lambda: f"revoked join token {args.id}", sys.stdout)
    return 0


def cmd_cluster_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.cluster_status()
    _emit(args, result, lambda: json.dumps(result, indent=2, sort_keys=True, default=str), sys.stdout)
    return 0


def add_parsers(verbs: Any, common: argparse.ArgumentParser,
                verb: Callable[..., argparse.ArgumentParser]) -> None:
    common_no_api = argparse.ArgumentParser(add_help=False)  # for `cluster add-master`, whose --api is the new one
    _global_options(common_no_api, api=False)
    p = verbs.add_parser("cluster", parents=[common], help="masters, leader and nodes")
    cluster = p.add_subparsers(dest="cluster_verb", metavar="ACTION", required=True)
    verb(cluster, "info", cmd_cluster_info, "masters, leader, term, commit index and nodes")
    verb(cluster, "leader", cmd_cluster_leader, "the current leader")
    verb(cluster, "status", cmd_cluster_status, "cluster status (Orchestry-compatible JSON)")
    verb(cluster, "members", cmd_cluster_members, "the masters: id, Raft and API address, role, last contact, lag")
    # Here --api names the new master (as `add-master ID --raft HOST:PORT --api URL` reads); the cluster
    # to talk to comes from ORCA_API or `orca --api URL cluster add-master ...`.
    help_add = "add a running master (started with the current members as its raft.peers); one change at a time"
    p = cluster.add_parser("add-master", parents=[common_no_api], help=help_add, description=help_add)
    p.set_defaults(handler=cmd_cluster_add_master)
    p.add_argument("id", metavar="ID", help="the new master's [node].id")
    p.add_argument("--raft", required=True, metavar="HOST:PORT", help="its raft.listen address")
    p.add_argument("--api", dest="master_api", required=True, metavar="URL",
                   help="its API URL ([api].advertise); the cluster is reached through ORCA_API or `orca --api`")
    p = verb(cluster, "remove-master", cmd_cluster_remove_master,
             "remove a master from the cluster (refused if the rest would lose quorum)")
    p.add_argument("id", metavar="ID")
    p = verb(cluster, "join-token", cmd_cluster_join_token,
             "mint a one-time join token an agent exchanges for its node credential (prints only the token)")
    p.add_argument("role", choices=["worker"], help="what joins: worker (an agent)")
    p.add_argument("--rotate", action="store_true", help="first revoke every unused join token")
    p.add_argument("--node", metavar="ID", help="only this node id may use it (default: any new node)")
    p.add_argument("--ttl", type=float, metavar="SECONDS", help="expiry (default 86400; 0: none)")
    p = verb(cluster, "init", cmd_cluster_init,
             "make the cluster CA in a master's data directory before its first start (no API call)")
    p.add_argument("--data-dir", required=True, metavar="DIR", help="the master's [node].data_dir")
    p = verbs_ca = cluster.add_parser("ca", parents=[common], help="the cluster certificate authority")
    ca = verbs_ca.add_subparsers(dest="ca_verb", metavar="ACTION", required=True)
    p = verb(ca, "show", cmd_cluster_ca_show, "the CA's fingerprint (SHA-256), the trusted CAs; --pem: the bundle")
    p.add_argument("--pem", action="store_true", help="print the PEM bundle (what --cacert and agents trust)")
    verb(ca, "rotate", cmd_cluster_ca_rotate,
         "make a new CA current; the old one stays trusted until `orca cluster ca finish`")
    p = verb(ca, "finish", cmd_cluster_ca_finish, "end a rotation: stop trusting the previous CA(s)")
    p.add_argument("--force", action="store_true", help="even if some node has not renewed its certificate yet")
    verb(cluster, "join-tokens", cmd_cluster_join_tokens, "list join tokens: used by, revoked, expiry")
    p = verb(cluster, "revoke-join-token", cmd_cluster_revoke_join_token, "revoke an unused join token")
    p.add_argument("id", metavar="ID")
