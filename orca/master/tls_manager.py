"""A master's TLS material: the cluster CA (first made here, then read from the replicated state), this
master's own certificate, and the contexts its listener and its outgoing calls use.

- First start: the leader finds no CA in the state and commits one (`ca_init`): the one `orca cluster
  init` left in `data_dir/tls/` if any, else a new one. The key travels sealed (SecretBox, keyed by the
  cluster secret), so any master can unseal it and issue.
- Every master follows the state: when the trusted CAs or the current one change (`orca cluster ca
  rotate`), or its own certificate is two thirds through its life, it issues itself a new certificate
  for its advertised names and swaps the listener's context in place (no restart, no dropped
  connection: orca.tls.SwappableContext).
- Files, all under `data_dir/tls/` (directory 0700): `ca.crt` (every trusted CA: the bundle clients
  use), `ca.key` (the current CA key, 0600), `master.crt`, `master.key` (0600).

`peer_ssl()` is the client context for this master's calls to agents and to other masters: it
trusts only the cluster CA and presents this master's certificate (the agents require it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from pathlib import Path
from typing import Any

from orca import tls
from orca.errors import OrcaError
from orca.master.secrets import SecretBox
from orca.raft import RaftNode
from orca.state.ops_ca import ca_table, signer

__all__ = ["MasterTls", "peer_ssl", "write_private", "local_ca", "init_local_ca"]

log = logging.getLogger("orca.tls")

_CURRENT: MasterTls | None = None


def peer_ssl() -> ssl.SSLContext | bool:
    """The context for calls to agents and masters: the cluster's when TLS is on, else aiohttp's default."""
    ctx = _CURRENT.client if _CURRENT is not None else None
    return ctx if ctx is not None else True


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomic write with `mode` from the first byte (a key is never readable by others, even briefly)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def local_ca(data_dir: Path) -> tuple[bytes, bytes] | None:
    """(key, cert) PEMs of a CA `orca cluster init` left in `data_dir/tls/`, if both files are there."""
    d = Path(data_dir) / "tls"
    try:
        return (d / "ca.key").read_bytes(), tls.split_bundle((d / "ca.crt").read_bytes())[0]
    except (OSError, IndexError):
        return None


def init_local_ca(data_dir: Path, days: int = tls.CA_DAYS) -> tuple[str, bool]:
    """`orca cluster init`: make the CA in `data_dir/tls/` unless one is there; (fingerprint, created)."""
    found = local_ca(data_dir)
    if found is not None:
        return tls.fingerprint(found[1]), False
    key, cert = tls.new_ca(time.time(), days)
    write_private(Path(data_dir) / "tls" / "ca.key", key)
    write_private(Path(data_dir) / "tls" / "ca.crt", cert, 0o644)
    return tls.fingerprint(cert), True


def ca_args(box: SecretBox, key_pem: bytes, cert_pem: bytes, overlap_s: float = 0.0) -> dict[str, Any]:
    """The args of `ca_init`/`ca_rotate` for a CA: its key sealed, never in clear."""
    info = tls.cert_info(cert_pem)
    return {"fingerprint": tls.fingerprint(cert_pem), "cert_pem": cert_pem.decode(),
            "key_sealed": box.seal(key_pem.decode()), "not_after": info["not_after"], "overlap_s": overlap_s}


class MasterTls:
    """Keeps this master's TLS material in step with the replicated CA table."""

    def __init__(self, raft: RaftNode, box: SecretBox, node_id: str, data_dir: Path, names: list[str],
                 cert_days: int = tls.CERT_DAYS) -> None:
        self.raft = raft
        self.box = box
        self.ident = tls.Identity("master", node_id)
        self.dir = Path(data_dir) / "tls"
        self.names = names
        self.cert_days = cert_days
        self.server: tls.SwappableContext | None = None
        self.client: ssl.SSLContext | None = None
        self.ready = asyncio.Event()
        self._seen: tuple[Any, ...] | None = None
        self._cert: bytes | None = None
        self._ca_cert: bytes | None = None
        self._fresh_ca: tuple[bytes, bytes] | None = None  # the provisional CA made in memory, if any

    def install(self) -> None:
        """Make this the process's TLS for outgoing calls (peer_ssl)."""
        global _CURRENT
        _CURRENT = self

    # --- what the API serves -------------------------------------------------------------------------
    def table(self) -> dict[str, Any]:
        return self.raft.read(lambda s: {"current": ca_table(s)["current"],
                                         "cas": {fp: dict(r) for fp, r in ca_table(s)["cas"].items()}})

    def bundle(self) -> bytes:
        """Every trusted CA certificate, current first."""
        t = self.table()
        order = ([t["current"]] if t["current"] else []) + sorted(fp for fp in t["cas"] if fp != t["current"])
        return b"".join(t["cas"][fp]["cert_pem"].encode() for fp in order)

    def signer(self) -> str | None:
        """The fingerprint of the CA that signs now (a rotated CA signs only after its overlap)."""
        return signer(self.table(), time.time())

    def current_ca(self) -> tuple[bytes, bytes]:
        """(key, cert) PEMs of the CA that signs now, the key unsealed; OrcaError when there is none."""
        t = self.table()
        fp = signer(t, time.time())
        record = t["cas"].get(fp) if fp else None
        key = self.box.open(record["key_sealed"]) if record else None
        if record is None or key is None:
            raise OrcaError("the cluster CA is not available on this master yet", code="CLUSTER_NOT_READY")
        return key.encode(), record["cert_pem"].encode()

    # --- keeping up ----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, period_s: float = 0.5) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - a bad step must not end the loop; it retries
                log.exception("TLS upkeep failed; retrying")
            try:
                await asyncio.wait_for(stop.wait(), period_s)
            except TimeoutError:
                pass

    async def step(self) -> None:
        t = self.table()
        if not t["current"]:
            if self.server is None:
                self._provisional(time.time())
            if self.raft.is_leader and self.raft.ready:
                await self._propose_init()
            return
        now = time.time()
        seen = (signer(t, now), tuple(sorted(t["cas"])))
        if seen != self._seen or self._cert is None or tls.needs_renewal(self._cert, self._ca_cert or b"", now):
            self._refresh(now)
            self._seen = seen

    async def _propose_init(self) -> None:
        found = local_ca(self.dir.parent)
        key, cert = found or self._fresh_ca or tls.new_ca(time.time())
        try:
            await self.raft.propose("ca_init", ca_args(self.box, key, cert), actor=f"master:{self.ident.id}")
            log.info("cluster CA %s recorded (%s)", tls.fingerprint(cert),
                     "from orca cluster init" if found else "made at first start")
        except OrcaError as err:
            log.info("cluster CA not recorded by this master: %s", err)

    def _provisional(self, now: float) -> None:
        """Before the cluster has a CA (no leader yet): listen with a certificate of the CA `orca cluster
        init` left here, else of one made in memory, so health checks answer while the peers come up.
        Clients pinned to the cluster CA refuse it, and nothing is written before a leader exists; as
        leader, this master records that same CA as the cluster's."""
        found = local_ca(self.dir.parent)
        if found is None:
            found = self._fresh_ca = tls.new_ca(now)
        self._install(now, found[0], found[1], found[1], persist_ca=False)

    def _refresh(self, now: float) -> None:
        ca_key, ca_cert = self.current_ca()
        self._install(now, ca_key, ca_cert, self.bundle())

    def _install(self, now: float, ca_key: bytes, ca_cert: bytes, bundle: bytes, persist_ca: bool = True) -> None:
        key_path, cert_path = self.dir / "master.key", self.dir / "master.crt"
        try:
            key = key_path.read_bytes()
            tls.csr_public_key(tls.make_csr(key, self.ident).decode())
        except (OSError, tls.TlsError):
            key = tls.new_key()
            write_private(key_path, key)
        cert = tls.issue(ca_key, ca_cert, tls.public_key(key), self.ident, self.names, now,
                         self.cert_days)
        write_private(cert_path, cert + ca_cert, 0o644)
        if persist_ca:
            # The key first: a ca.crt on disk means the CA is complete here (readers wait on ca.crt).
            write_private(self.dir / "ca.key", ca_key)
            write_private(self.dir / "ca.crt", bundle, 0o644)
        files = (str(cert_path), str(key_path))
        server = tls.server_context(cert, key, bundle, files=files)
        self.client = tls.client_context(bundle, files)
        if self.server is None:
            self.server = tls.SwappableContext(server)
        else:
            self.server.swap(server)
        self._cert, self._ca_cert = cert, ca_cert
        log.info("TLS: certificate for %s issued by CA %s (trusting %d CA(s))", ", ".join(self.names),
                 tls.fingerprint(ca_cert)[:16], len(tls.split_bundle(bundle)))
        self.ready.set()
