"""An example or two for every verb, shown at the end of its `--help` and in docs/cli.md.

Kept in one table so a test can check that every verb has one (tests/unit/test_cli_docs.py) and so the
examples read as a set: the same service (`web`), node (`worker-1`) and project (`shop`) throughout.
"""

from __future__ import annotations

import argparse

__all__ = ["EXAMPLES", "attach"]

EXAMPLES: dict[str, list[str]] = {
    "server": ["orca server --config master-1.toml"],
    "agent": ["orca agent --config worker-1.toml"],
    "join": ["orca join --token ORCAJOIN-2-... https://10.0.0.1:6880 --id worker-2 --label zone=b"],
    "token create": ["orca token create --role deployer --name ci --project shop",
                     "orca token create --role admin --name root --secret-file data/cluster.secret"],
    "token list": ["orca token list", "orca token list -q"],
    "token revoke": ["orca token revoke 3f2a9c --yes"],
    "deploy": ["orca deploy -f examples/web.json", "orca deploy -f shop/ --timeout 300",
               "orca deploy -f web.toml --detach -o json"],
    "validate": ["orca validate -f examples/shop.toml", "orca validate -f web.json -o json"],
    "promote": ["orca promote web --wait"],
    "rollback": ["orca rollback web --wait --timeout 300"],
    "status": ["orca status", "orca status --project shop -o wide", "orca status -q | xargs -n1 orca ps"],
    "scale": ["orca scale web 5"],
    "stop": ["orca stop web", "orca stop web --purge --yes", "orca stop --project shop --yes"],
    "start": ["orca start web"],
    "ps": ["orca ps web", "orca ps web -o wide"],
    "history": ["orca history web", "orca history web -o yaml"],
    "logs": ["orca logs web --tail 20", "orca logs web -f --since 10m --timestamps",
             "orca logs web --since 2026-12-01T10:00:00Z | grep ERROR"],
    "nodes": ["orca nodes", "orca nodes -o wide", "orca nodes worker-1"],
    "drain": ["orca drain worker-1 --yes", "orca drain worker-1 --deadline 10m --detach --yes"],
    "undrain": ["orca undrain worker-1"],
    "node rm": ["orca node rm worker-1 --yes"],
    "volumes ls": ["orca volumes ls", "orca volumes ls --node worker-1 -q"],
    "volumes rm": ["orca volumes rm worker-1 db --yes"],
    "run": ["orca run -f migrate.toml --timeout 120"],
    "secrets set": ["printf %s \"$DB_PASS\" | orca secrets set DB_PASS --project shop"],
    "secrets grant": ["orca secrets grant DB_PASS --project shop --project billing"],
    "secrets list": ["orca secrets list", "orca secrets ls -q"],
    "secrets rm": ["orca secrets rm DB_PASS --yes"],
    "events": ["orca events --since 1h", "orca events --service web -f",
               "orca events --since 2026-12-01T10:00:00Z --type service_deployed -o json",
               "orca events --since-seq 1200 -f -o json"],
    "top": ["orca top", "orca top --once --project shop -o json"],
    "scaling get": ["orca scaling get web"],
    "scaling set": ["orca scaling set web --mode auto --min 2 --max 10 --target-rps 50"],
    "scaling off": ["orca scaling off web"],
    "webhooks add": ["orca webhooks add --repo acme/web --service web --branch main"],
    "webhooks list": ["orca webhooks list"],
    "webhooks remove": ["orca webhooks remove 7c1e --yes"],
    "ui": ["orca ui", "orca ui --print"],
    "cluster info": ["orca cluster info"],
    "cluster leader": ["orca cluster leader"],
    "cluster status": ["orca cluster status"],
    "cluster members": ["orca cluster members", "orca cluster members -q"],
    "cluster add-master": ["orca --api http://10.0.0.1:6880 cluster add-master master-4 --raft 10.0.0.4:7000 "
                           "--api http://10.0.0.4:6880"],
    "cluster remove-master": ["orca cluster remove-master master-4 --yes"],
    "cluster join-token": ["orca cluster join-token worker > worker.token", "orca cluster join-token worker "
                           "--node worker-2 --ttl 3600"],
    "cluster init": ["orca cluster init --data-dir data/master-1"],
    "cluster ca show": ["orca cluster ca show", "orca cluster ca show --pem > ca.crt"],
    "cluster ca rotate": ["orca cluster ca rotate"],
    "cluster ca finish": ["orca cluster ca finish"],
    "cluster join-tokens": ["orca cluster join-tokens"],
    "cluster revoke-join-token": ["orca cluster revoke-join-token 5d2b"],
    "context set": ["orca context set prod --api https://10.0.0.1:6880 --token-file ~/.orca/prod.token --use"],
    "context list": ["orca context list"],
    "context show": ["orca context show prod"],
    "context use": ["orca context use prod"],
    "context rm": ["orca context rm staging"],
    "context refresh": ["orca context refresh prod"],
    "snapshot save": ["orca snapshot save backup.snap", "orca snapshot save --dir /var/backups/orca --keep 7"],
    "snapshot inspect": ["orca snapshot inspect backup.snap"],
    "snapshot restore": ["orca snapshot restore backup.snap", "orca snapshot restore backup.snap --force --yes"],
    "version": ["orca version", "orca --version", "orca version --client -o json"],
    "completion": ["source <(orca completion bash)", "orca completion zsh > \"${fpath[1]}/_orca\""],
}


def attach(parser: argparse.ArgumentParser, path: str) -> None:
    """Put the examples of verb `path` (e.g. "token create") at the end of its help, as written."""
    lines = EXAMPLES.get(path)
    if not lines:
        return
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in lines)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
