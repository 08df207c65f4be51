"""The cluster's certificate authority and the TLS contexts built from it (the `cryptography` package
and the standard `ssl` module; nothing hand-rolled).

Identities live in one URI subject-alternative name per certificate:
- `orca://master/<id>`: a master (server certificate of the API, client certificate of the dispatcher);
- `orca://node/<id>`: a worker node (client certificate for register/heartbeat/logs, server
  certificate of the agent API the leader pushes to).
The node id a master acts on comes from that name, never from the request body, so a node cannot
speak for another. Keys are ECDSA P-256; every certificate carries both serverAuth and clientAuth.

Fingerprints are the SHA-256 of a CA certificate's DER bytes, 64 lowercase hex characters (what a
version-2 join token carries and `orca cluster ca show` prints).

Pure apart from the clock passed in and the key generation; no file I/O (callers store the PEMs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA_DAYS", "CERT_DAYS", "Identity", "new_key", "new_ca", "fingerprint", "make_csr", "csr_public_key",
           "issue", "issued_by", "public_key", "identity_of", "cert_info", "needs_renewal", "split_bundle",
           "server_context", "client_context", "SwappableContext", "names_for_url", "TlsError", "MAX_PEM_BYTES",
           "valid_fingerprint"]

CA_DAYS = 3650
CERT_DAYS = 90
MAX_PEM_BYTES = 16 * 1024
_ROLES = ("master", "node")
_ID_RE = re.compile(r"[a-z0-9-]{1,63}")
_URI_RE = re.compile(r"orca://(master|node)/([a-z0-9-]{1,63})")
_FP_RE = re.compile(r"[0-9a-f]{64}")
_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


class TlsError(ValueError):
    """A PEM, CSR or certificate that cannot be used; the message names what, never key material."""


@dataclass(frozen=True)
class Identity:
    role: str  # "master" | "node"
    id: str


def _now(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def new_key() -> bytes:
    """A fresh ECDSA P-256 private key, PEM (PKCS#8, unencrypted: the caller stores it 0600 or sealed)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise TlsError("not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError("expected an EC private key")
    return key


def public_key(key_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The public half of a PEM private key."""
    return _load_key(key_pem).public_key()


def _load_cert(pem: bytes) -> x509.Certificate:
    if not isinstance(pem, bytes) or len(pem) > MAX_PEM_BYTES:
        raise TlsError("certificate: expected at most 16 KiB of PEM")
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise TlsError("not a PEM certificate") from None


def new_ca(now: float, days: int = CA_DAYS, label: str = "") -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) of a new self-signed cluster CA valid from now - 1 h for `days`."""
    key_pem = new_key()
    key = _load_key(key_pem)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "orca"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"orca cluster CA {label}".strip())])
    start = _now(now) - dt.timedelta(hours=1)  # clocks of the hosts differ a little
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER, lowercase hex."""
    return hashlib.sha256(_load_cert(cert_pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def split_bundle(bundle: bytes) -> list[bytes]:
    """The certificates of a PEM bundle, each as its own PEM."""
    return [m.group(0) + b"\n" for m in _PEM_CERT_RE.finditer(bundle)]


def make_csr(key_pem: bytes, ident: Identity) -> bytes:
    """A certificate signing request for `ident` (the master decides what it signs, not the CSR)."""
    key = _load_key(key_pem)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ident.id)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_public_key(csr_pem: object) -> ec.EllipticCurvePublicKey:
    """The public key of a CSR whose signature checks; only the key is used from it."""
    if not isinstance(csr_pem, str) or len(csr_pem) > MAX_PEM_BYTES:
        raise TlsError("csr: expected a PEM certificate signing request (at most 16 KiB)")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise TlsError("csr: not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise TlsError("csr: bad signature")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise TlsError("csr: expected an ECDSA P-256 key")
    return key


def names_for_url(url: str) -> list[str]:
    """The host of an advertised URL, as a name to put in a certificate."""
    host = urlsplit(url).hostname
    return [host] if host else []


def issue(ca_key_pem: bytes, ca_cert_pem: bytes, public_key: ec.EllipticCurvePublicKey, ident: Identity,
          names: Iterable[str], now: float, days: int = CERT_DAYS) -> bytes:
    """A leaf certificate for `ident` signed by the CA, valid from now - 1 h for `days` (never past the
    CA's own end); `names` (host names and IP addresses) become DNS/IP alternative names."""
    if ident.role not in _ROLES or not _ID_RE.fullmatch(ident.id):
        raise TlsError("identity: expected master|node and an id [a-z0-9-]{1,63}")
    ca_key, ca_cert = _load_key(ca_key_pem), _load_cert(ca_cert_pem)
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"orca://{ident.role}/{ident.id}")]
    for name in dict.fromkeys(n for n in names if n):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    start = _now(now) - dt.timedelta(hours=1)
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "orca"),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ident.role),
                                     x509.NameAttribute(NameOID.COMMON_NAME, ident.id)]))
            .issuer_name(ca_cert.subject).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def identity_of(cert: bytes | x509.Certificate | None) -> Identity | None:
    """The orca identity in a (DER or PEM or loaded) certificate, or None. Only call this on a
    certificate the TLS layer has verified against the cluster CA."""
    if cert is None:
        return None
    try:
        if isinstance(cert, bytes):
            cert = (x509.load_pem_x509_certificate(cert) if cert.startswith(b"-----")
                    else x509.load_der_x509_certificate(cert))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    found = [m for uri in san.get_values_for_type(x509.UniformResourceIdentifier) if (m := _URI_RE.fullmatch(uri))]
    if len(found) != 1:
        return None
    return Identity(found[0].group(1), found[0].group(2))


def cert_info(cert_pem: bytes) -> dict[str, object]:
    """What status output shows of a certificate: identity, issuer fingerprint match is the caller's."""
    cert = _load_cert(cert_pem)
    ident = identity_of(cert)
    return {"role": ident.role if ident else None, "id": ident.id if ident else None,
            "not_before": cert.not_valid_before_utc.timestamp(), "not_after": cert.not_valid_after_utc.timestamp(),
            "serial": format(cert.serial_number, "x"), "issuer": cert.issuer.rfc4514_string()}


def issued_by(cert: bytes, ca_cert_pem: bytes) -> bool:
    """Whether `cert` (DER or PEM) carries a valid signature of the CA in `ca_cert_pem`."""
    try:
        leaf = (x509.load_pem_x509_certificate(cert) if cert.startswith(b"-----")
                else x509.load_der_x509_certificate(cert))
        leaf.verify_directly_issued_by(_load_cert(ca_cert_pem))
        return True
    except Exception:  # noqa: BLE001 - any failure means: not this CA's
        return False


def needs_renewal(cert_pem: bytes, ca_cert_pem: bytes, now: float) -> bool:
    """True when the certificate is past two thirds of its lifetime, or was not signed by `ca_cert_pem`
    (the CA was rotated), or cannot be read."""
    if not issued_by(cert_pem, ca_cert_pem):
        return True
    cert = _load_cert(cert_pem)
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    return now >= start + (end - start) * 2 / 3


def valid_fingerprint(value: object) -> bool:
    return isinstance(value, str) and bool(_FP_RE.fullmatch(value))


def _base_context(purpose: ssl.Purpose) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def server_context(cert_pem: bytes, key_pem: bytes, trust_pem: bytes, *, client_cert: str = "optional",
                   files: tuple[str, str] | None = None) -> ssl.SSLContext:
    """A server context presenting `cert_pem`; client certificates are verified against `trust_pem`
    ("optional": served to people with a bearer token and to scrapers, each route deciding what a
    missing certificate may do; "required": refused at the handshake).
    `files` are (cert path, key path) holding the same PEMs: `ssl` only loads a chain from files."""
    if files is None:
        raise TlsError("server_context needs the certificate and key as files")
    ctx = _base_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files[0], files[1])
    ctx.load_verify_locations(cadata=trust_pem.decode())
    ctx.verify_mode = ssl.CERT_REQUIRED if client_cert == "required" else ssl.CERT_OPTIONAL
    return ctx


def client_context(trust_pem: bytes | None, files: tuple[str, str] | None = None,
                   check_hostname: bool = True) -> ssl.SSLContext:
    """A client context trusting only `trust_pem` (the cluster CA bundle), presenting the certificate
    in `files` (cert path, key path) when given. Without a bundle: verification off, for the one
    request that fetches the CA to compare it with a pinned fingerprint."""
    ctx = _base_context(ssl.Purpose.SERVER_AUTH)
    if trust_pem is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=trust_pem.decode())
        ctx.check_hostname = check_hostname
    if files is not None:
        ctx.load_cert_chain(files[0], files[1])
    return ctx


class SwappableContext:
    """A server context whose certificate and trust can be replaced while the listener runs (rotation
    without downtime): every handshake is moved, from its SNI callback, onto the current context."""

    def __init__(self, current: ssl.SSLContext) -> None:
        self.current = current
        self.outer = _base_context(ssl.Purpose.CLIENT_AUTH)
        self.outer.verify_mode = current.verify_mode
        self.outer.sni_callback = self._pick

    def _pick(self, sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.current

    def swap(self, ctx: ssl.SSLContext) -> None:
        self.current = ctx
