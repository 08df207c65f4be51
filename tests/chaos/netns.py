"""What both network-namespace harnesses share (the partition cluster and the three hosts)."""

from __future__ import annotations

import subprocess


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=20, check=check)


def remove_network(forward_rule: list[str] | None, namespaces: list[str], links: list[str]) -> list[str]:
    """Delete the FORWARD rule, the namespaces and the links a harness made; the problems met, in words.

    Everything is attempted whatever fails before it: a test's network must go even when it broke.
    """
    problems: list[str] = []
    if forward_rule is not None:
        res = run("iptables", "-D", *forward_rule, check=False)
        if res.returncode != 0:
            problems.append(f"iptables -D {' '.join(forward_rule)}: {res.stderr.strip()}")
    for ns in namespaces:  # deleting a namespace deletes its veth end, and so the pair
        res = run("ip", "netns", "del", ns, check=False)
        if res.returncode != 0:
            problems.append(f"ip netns del {ns}: {res.stderr.strip()}")
    for link in reversed(links):
        res = run("ip", "link", "del", link, check=False)
        # A veth goes away with its namespace, sometimes a moment after `ip netns del` returns.
        if res.returncode != 0 and "Cannot find device" not in res.stderr:
            problems.append(f"ip link del {link}: {res.stderr.strip()}")
    return problems
