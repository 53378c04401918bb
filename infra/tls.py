"""A private certificate authority for the embedded stack's TLS listeners.

Made once under a folder and reused: a CA certificate (what clients trust, via
``ssl.ca.location`` or ``ssl_ca_certs``) and one server key pair for 127.0.0.1 and
localhost, signed by it. Kafka reads the key and chain as a PEM keystore; Redis reads
the same files. Only for the embedded stack: an operator's cluster brings its own.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALID_DAYS = 825
RENEW_DAYS = 30  # a certificate this close to its end is made anew at the next start


@dataclass(frozen=True)
class TlsFiles:
    """Where the PEM files are; ``keystore`` holds the key then the chain (for Kafka)."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"

    @property
    def keystore(self) -> Path:
        return self.folder / "server-keystore.pem"

    def ensure(self) -> TlsFiles:
        """Create the CA and the server key pair unless they exist and the server's
        certificate stays valid for ``RENEW_DAYS`` more. An expiring pair is made anew
        with a new CA (the old CA's key is not kept), as its service starts; a client
        that loaded the old ``ca.pem`` trusts the new one once it restarts."""
        if all(p.exists() for p in (self.ca, self.cert, self.key, self.keystore)) and \
                self.valid_until() > dt.datetime.now(dt.UTC) + dt.timedelta(days=RENEW_DAYS):
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), \
            ec.generate_private_key(ec.SECP256R1())
        ca_name = f"streamrec local CA {dt.datetime.now(dt.UTC):%Y-%m-%d} {secrets.token_hex(4)}"
        ca = _certificate(ca_name, ca_key.public_key(), ca_key, ca_name, is_ca=True)
        server = _certificate("localhost", server_key.public_key(), ca_key, ca_name,
                              is_ca=False)
        key_pem = server_key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
        ca_pem = ca.public_bytes(serialization.Encoding.PEM)
        chain = server.public_bytes(serialization.Encoding.PEM) + ca_pem
        write_file(self.ca, ca_pem, private=False)
        write_file(self.cert, chain, private=False)
        write_file(self.key, key_pem, private=True)
        write_file(self.keystore, key_pem + chain, private=True)
        return self

    def valid_until(self) -> dt.datetime:
        """When the server's certificate (the first of its chain) expires."""
        return x509.load_pem_x509_certificate(self.cert.read_bytes()).not_valid_after_utc


def _certificate(subject: str, public_key: ec.EllipticCurvePublicKey,
                 signer: ec.EllipticCurvePrivateKey, issuer: str, *, is_ca: bool
                 ) -> x509.Certificate:
    """Each CA has its own name, and each certificate names its key and its signer's: a
    renewed pair is never taken for the one before."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                       critical=False)
    )
    if not is_ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(signer, hashes.SHA256())


def write_file(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``data``; a private file (a key, a password) is readable by its owner only,
    from its first byte on."""
    mode = 0o600 if private else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # an existing file keeps its old mode through os.open
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def private_dir(path: Path) -> Path:
    """``path`` created if missing and made readable by its owner only (a folder made
    before this rule too): Kafka's logs, Redis's append-only file, MLflow's database and
    the workers' sessions hold the product's data, which ACLs and SASL protect only on
    the wire."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path
