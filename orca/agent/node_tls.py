"""A worker node's TLS material: the cluster CA it trusts, its key and its node certificate.

Files, under `data_dir/tls/` (directory 0700): `ca.crt` (the trusted CA bundle), `node.key` (0600,
made here and never sent anywhere: the masters sign a CSR), `node.crt`.

Where the trust comes from, in order: `ca.crt` from an earlier start; the config's `ca_file`; or a
version-2 join token, whose CA fingerprint is pinned: the CA bundle is fetched once without
verification and accepted only if one of its certificates has exactly that SHA-256 (Swarm's model;
nothing copied by hand but the token). Afterwards every connection is verified against it.

Renewal: a master's heartbeat answer names the CA that signs now and every trusted one. A CA this node
does not trust yet is fetched (over the still-verified connection) and added; a certificate that the
signing CA did not issue, or past two thirds of its life, is renewed (`POST /api/v1/agent/certificate`).
"""

from __future__ import annotations

import logging
import ssl
import time
from pathlib import Path
from typing import Any

from orca import tls
from orca.master.tls_manager import write_private

__all__ = ["NodeTls"]

log = logging.getLogger("orca.agent")


class NodeTls:
    def __init__(self, node_id: str, data_dir: Path, names: list[str], ca_file: Path | None = None,
                 enabled: bool = True) -> None:
        self.ident = tls.Identity("node", node_id)
        self.dir = Path(data_dir) / "tls"
        self.names = names
        self.ca_file = ca_file
        self.enabled = enabled
        self.server: tls.SwappableContext | None = None
        self._client: ssl.SSLContext | None = None

    # --- files ---------------------------------------------------------------------------------------
    def trust(self) -> bytes | None:
        for path in (self.dir / "ca.crt", self.ca_file):
            if path is not None:
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                if tls.split_bundle(data):
                    return data
        return None

    def trusted_fingerprints(self) -> set[str]:
        return {tls.fingerprint(c) for c in tls.split_bundle(self.trust() or b"")}

    def cert(self) -> bytes | None:
        """This node's certificate, or None when absent or expired (an agent offline past its expiry asks
        for a new one with its token, without presenting the dead certificate)."""
        try:
            data = (self.dir / "node.crt").read_bytes()
            if tls.identity_of(data) != self.ident or float(tls.cert_info(data)["not_after"]) <= time.time():
                return None
        except (OSError, tls.TlsError):
            return None
        return data

    def _files(self) -> tuple[str, str]:
        return str(self.dir / "node.crt"), str(self.dir / "node.key")

    def csr(self) -> str:
        """A CSR for this node's key (made on first use, kept 0600)."""
        path = self.dir / "node.key"
        try:
            key = path.read_bytes()
            tls.public_key(key)
        except (OSError, tls.TlsError):
            key = tls.new_key()
            write_private(path, key)
        return tls.make_csr(key, self.ident).decode()

    # --- first contact -------------------------------------------------------------------------------
    def pin(self, bundle: Any, fingerprint: str) -> str | None:
        """Accept a CA bundle fetched unverified if it holds the CA of `fingerprint`; returns a problem."""
        if not isinstance(bundle, str):
            return "the master sent no CA bundle"
        certs = tls.split_bundle(bundle.encode()[: 4 * tls.MAX_PEM_BYTES])
        try:
            found = {tls.fingerprint(c) for c in certs}
        except tls.TlsError:
            return "the master sent an unreadable CA bundle"
        if fingerprint not in found:
            return ("the master's CA does not match the fingerprint in the join token: refusing it (a wrong "
                    "master, or someone in between)")
        write_private(self.dir / "ca.crt", b"".join(certs), 0o644)
        self._client = None
        return None

    def add_trust(self, bundle: Any) -> None:
        """Trust the CAs of a bundle fetched over a verified connection (a rotation)."""
        if isinstance(bundle, str) and tls.split_bundle(bundle.encode()):
            write_private(self.dir / "ca.crt", b"".join(tls.split_bundle(bundle.encode())), 0o644)
            self._rebuild()

    def accept(self, reply: Any) -> str | None:
        """Store the certificate (and CA bundle) of a join or certificate answer; returns a problem."""
        cert = reply.get("certificate") if isinstance(reply, dict) else None
        if not isinstance(cert, str) or tls.identity_of(cert.encode()) != self.ident:
            return f"the answer holds no certificate for node {self.ident.id}"
        bundle = reply.get("ca_bundle")
        if isinstance(bundle, str) and tls.split_bundle(bundle.encode()):
            write_private(self.dir / "ca.crt", b"".join(tls.split_bundle(bundle.encode())), 0o644)
        if not any(tls.issued_by(cert.encode(), ca) for ca in tls.split_bundle(self.trust() or b"")):
            return "the certificate was not issued by a CA this node trusts"
        write_private(self.dir / "node.crt", cert.encode(), 0o644)
        self._rebuild()
        log.info("node certificate for %s stored (valid until %s)", self.ident.id,
                 time.strftime("%Y-%m-%d", time.gmtime(float(tls.cert_info(cert.encode())["not_after"]))))
        return None

    # --- contexts ------------------------------------------------------------------------------------
    def _rebuild(self) -> None:
        trust = self.trust()
        if trust is None:
            return
        files = self._files() if self.cert() is not None else None
        self._client = tls.client_context(trust, files)
        if files is not None:
            # Client certificates are asked for, not required: every route that acts (pushes, logs,
            # volumes) checks for a master's certificate itself (orca.agent.api), and /metrics and
            # /v1/health stay reachable by a Prometheus that trusts the cluster CA.
            ctx = tls.server_context(b"", b"", trust, client_cert="optional", files=files)
            if self.server is None:
                self.server = tls.SwappableContext(ctx)
            else:
                self.server.swap(ctx)

    def ready(self) -> bool:
        """Trust and a certificate are there: the agent API can listen and heartbeats can start."""
        if self.trust() is None or self.cert() is None:
            return False
        if self.server is None or self._client is None:
            self._rebuild()
        return True

    def client_ssl(self, verify: bool = True) -> ssl.SSLContext | bool:
        """The context for calls to masters (verify=False only for the one pinned CA fetch)."""
        if not self.enabled:
            return True
        if not verify:
            return tls.client_context(None)
        if self._client is None:
            trust = self.trust()
            if trust is None:
                return True
            self._rebuild()
        return self._client or True

    def wants_renewal(self, signing: Any, now: float) -> bool:
        cert = self.cert()
        if cert is None or not isinstance(signing, str):
            return cert is None
        ca = next((c for c in tls.split_bundle(self.trust() or b"") if tls.fingerprint(c) == signing), None)
        return ca is None or tls.needs_renewal(cert, ca, now)
