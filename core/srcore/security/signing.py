"""The CA that signs onboarding packages' edge certificates, and what edges are told to trust.

Embedded default: the development CA under ``<data dir>/pki``, which the server already trusts.
Production: an operator-provided CA certificate and key (`package_ca_cert`, `package_ca_key`),
typically an intermediate dedicated to edge onboarding. It must appear in `tls_client_ca`, or
the certificates it signs would fail the TLS handshake; that is checked at start-up rather than
discovered by the first edge. docs/security.md discusses per-tenant edge CAs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from srcore.domain.errors import InvalidArgument
from srcore.security.pki import CertificateAuthority, IssuedCertificate, issue_edge_certificate


@dataclass(frozen=True, slots=True)
class PackageSigner:
    """Issues edge certificates for packages and knows the CA bundle edges verify the core with."""

    ca: CertificateAuthority
    server_ca_pem: bytes
    trust_domain: str
    validity: timedelta

    def issue(self, tenant: str, poller_id: str, now: datetime) -> IssuedCertificate:
        """A client certificate for `spiffe://<trust domain>/tenant/<tenant>/poller/<poller_id>`."""
        return issue_edge_certificate(self.ca, self.trust_domain, tenant, poller_id, self.validity, now=now)


def load_signing_ca(cert_path: Path, key_path: Path) -> CertificateAuthority:
    """An operator-provided signing CA: a CA certificate and its EC private key (PEM)."""
    cert_pem = cert_path.read_bytes()
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as exc:
        raise InvalidArgument("package_ca_cert", f"cannot load the signing CA: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("package_ca_key", "must be an EC private key (P-256 or P-384)")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise InvalidArgument("package_ca_key", "does not belong to package_ca_cert")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise InvalidArgument("package_ca_cert", "is not a CA certificate (basicConstraints CA:TRUE)")
    return CertificateAuthority(cert=cert, key=key, cert_pem=cert_pem)


def require_trusted(ca: CertificateAuthority, client_ca_pem: bytes) -> None:
    """Refuse a signing CA the server's client-certificate trust store does not contain."""
    trusted = x509.load_pem_x509_certificates(client_ca_pem)
    if not any(cert == ca.cert for cert in trusted):
        raise InvalidArgument(
            "package_ca_cert",
            "is not in tls_client_ca, so the certificates it signs would fail the TLS handshake",
        )
