"""A small certificate authority: the embedded dev PKI, edge and operator certificates.

Keys are ECDSA P-256, signatures SHA-256. Identities travel as SPIFFE URI SANs (see
`srcore.security.identity`); the common name is informational only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from srcore.domain import validation
from srcore.domain.errors import InvalidArgument
from srcore.security.identity import PLATFORM_ADMIN, ROLES, edge_spiffe_id, operator_spiffe_id

CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=365)
# Certificates start a little in the past so that a peer whose clock lags ours still accepts
# a certificate issued a moment ago.
_BACKDATE = timedelta(minutes=5)

# The SPIFFE specification's trust domain alphabet.
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")

DEV_OPERATOR_NAME = "admin"
DEV_OPERATOR_ROLE = PLATFORM_ADMIN
DEV_EDGE_TENANT = "default"
DEV_EDGE_POLLER = "demo"


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA certificate with its private key, able to sign leaf certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_pem: bytes


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A freshly issued leaf certificate and its private key (PKCS#8, unencrypted)."""

    cert_pem: bytes
    key_pem: bytes
    serial: int
    not_after: datetime


@dataclass(frozen=True, slots=True)
class DevPki:
    """Where `ensure_dev_pki` keeps the embedded CA and the certificates it issued."""

    directory: Path
    trust_domain: str
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    operator_cert: Path
    operator_key: Path
    edge_cert: Path
    edge_key: Path


def load_or_create_ca(directory: Path, common_name: str) -> CertificateAuthority:
    """Load `ca.pem`/`ca-key.pem` from `directory`, or create a self-signed CA there.

    A CA certificate without its key is an error rather than a reason to start over: replacing
    the CA would silently invalidate every certificate it issued.
    """
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if cert_path.exists():
        if not key_path.exists():
            raise FileNotFoundError(f"CA certificate {cert_path} exists but its key {key_path} is missing")
        cert_pem = cert_path.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = _load_ec_key(key_path)
        if not _same_public_key(cert, key):
            raise ValueError(f"CA key {key_path} does not belong to CA certificate {cert_path}")
        return CertificateAuthority(cert=cert, key=key, cert_pem=cert_pem)

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    _prepare_directory(directory)
    # Key first: a crash in between leaves a stray key, never a CA certificate without one.
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(cert_path, cert_pem, 0o644)
    return CertificateAuthority(cert=cert, key=key, cert_pem=cert_pem)


def issue_server_certificate(
    ca: CertificateAuthority,
    hosts: Sequence[str],
    validity: timedelta = LEAF_VALIDITY,
    *,
    now: datetime | None = None,
) -> IssuedCertificate:
    """A serverAuth certificate valid for every host: IP SANs for addresses, DNS SANs otherwise."""
    if not hosts:
        raise InvalidArgument("hosts", "at least one host name or address is required")
    return _issue(
        ca,
        common_name=hosts[0],
        sans=[_host_san(host) for host in hosts],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        validity=validity,
        now=now,
    )


def issue_edge_certificate(
    ca: CertificateAuthority,
    trust_domain: str,
    tenant: str,
    poller_id: str,
    validity: timedelta = LEAF_VALIDITY,
    *,
    now: datetime | None = None,
) -> IssuedCertificate:
    """A clientAuth certificate for one poller: `spiffe://<td>/tenant/<tenant>/poller/<poller>`."""
    _check_trust_domain(trust_domain)
    validation.slug("tenant", tenant)
    validation.identifier("poller_id", poller_id)
    return _issue(
        ca,
        common_name=poller_id,
        sans=[x509.UniformResourceIdentifier(edge_spiffe_id(trust_domain, tenant, poller_id))],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        validity=validity,
        now=now,
    )


def issue_operator_certificate(
    ca: CertificateAuthority,
    trust_domain: str,
    name: str,
    role: str,
    tenant: str | None,
    validity: timedelta = LEAF_VALIDITY,
    *,
    now: datetime | None = None,
) -> IssuedCertificate:
    """A clientAuth certificate for an operator, scoped to `tenant` or platform-wide when None."""
    _check_trust_domain(trust_domain)
    validation.identifier("name", name)
    if role not in ROLES:
        raise InvalidArgument("role", f"must be one of {', '.join(sorted(ROLES))}")
    if tenant is not None:
        validation.slug("tenant", tenant)
        if role == PLATFORM_ADMIN:
            raise InvalidArgument("role", "platform-admin cannot be scoped to a tenant")
    return _issue(
        ca,
        common_name=name,
        sans=[x509.UniformResourceIdentifier(operator_spiffe_id(trust_domain, name, role, tenant))],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        validity=validity,
        now=now,
    )


def write_pem_pair(path_cert: Path, path_key: Path, issued: IssuedCertificate) -> None:
    """Write a certificate (0644) and its key (0600), each atomically, the key first."""
    _write_atomic(path_key, issued.key_pem, 0o600)
    _write_atomic(path_cert, issued.cert_pem, 0o644)


def ensure_dev_pki(
    directory: Path,
    trust_domain: str = "serviceradar",
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
) -> DevPki:
    """Create the embedded dev CA and its server, operator and edge certificates once.

    Existing files are reused as they are. A leaf is reissued only when it can no longer serve:
    missing, expired, not signed by this CA, key not matching, or not carrying the SANs asked
    for now (e.g. a host was added), so the same call twice never rewrites anything.
    """
    _check_trust_domain(trust_domain)
    _prepare_directory(directory)
    ca = load_or_create_ca(directory, f"ServiceRadar dev CA ({trust_domain})")
    pki = DevPki(
        directory=directory,
        trust_domain=trust_domain,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        operator_cert=directory / "operator.pem",
        operator_key=directory / "operator-key.pem",
        edge_cert=directory / f"edge-{DEV_EDGE_TENANT}-{DEV_EDGE_POLLER}.pem",
        edge_key=directory / f"edge-{DEV_EDGE_TENANT}-{DEV_EDGE_POLLER}-key.pem",
    )
    if not _reusable(pki.server_cert, pki.server_key, ca, [_host_san(h) for h in hosts]):
        write_pem_pair(pki.server_cert, pki.server_key, issue_server_certificate(ca, hosts))
    operator_uri = operator_spiffe_id(trust_domain, DEV_OPERATOR_NAME, DEV_OPERATOR_ROLE, None)
    if not _reusable(pki.operator_cert, pki.operator_key, ca, [x509.UniformResourceIdentifier(operator_uri)]):
        issued = issue_operator_certificate(ca, trust_domain, DEV_OPERATOR_NAME, DEV_OPERATOR_ROLE, None)
        write_pem_pair(pki.operator_cert, pki.operator_key, issued)
    edge_uri = edge_spiffe_id(trust_domain, DEV_EDGE_TENANT, DEV_EDGE_POLLER)
    if not _reusable(pki.edge_cert, pki.edge_key, ca, [x509.UniformResourceIdentifier(edge_uri)]):
        issued = issue_edge_certificate(ca, trust_domain, DEV_EDGE_TENANT, DEV_EDGE_POLLER)
        write_pem_pair(pki.edge_cert, pki.edge_key, issued)
    return pki


def _issue(
    ca: CertificateAuthority,
    *,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    validity: timedelta,
    now: datetime | None,
) -> IssuedCertificate:
    if validity <= timedelta(0):
        raise InvalidArgument("validity", "must be positive")
    start = now if now is not None else datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = start + validity
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return IssuedCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(key),
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
    )


def _check_trust_domain(trust_domain: str) -> None:
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise InvalidArgument("trust_domain", "must be 1-255 characters of [a-z0-9._-]")


def _host_san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _reusable(
    cert_path: Path, key_path: Path, ca: CertificateAuthority, wanted: list[x509.GeneralName]
) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = _load_ec_key(key_path)
        cert.verify_directly_issued_by(ca.cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return (
        _same_public_key(cert, key)
        and cert.not_valid_after_utc > datetime.now(UTC)
        and all(name in sans for name in wanted)
    )


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return key


def _same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _prepare_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing directory; it holds
    # private keys, so enforce it.
    directory.chmod(0o700)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # A temporary file in the same directory plus rename: readers never see a half-written
    # file, and mkstemp creates it 0600 so a key is never briefly world-readable.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
