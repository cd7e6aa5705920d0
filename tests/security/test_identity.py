"""Strict SPIFFE ID parsing and peer identity from certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from srcore.domain.errors import PermissionDenied, Unauthenticated
from srcore.security import pki
from srcore.security.identity import (
    IdentityKind,
    SpiffeId,
    identity_from_auth_context,
    identity_from_pem,
    parse_spiffe_id,
)
from srcore.security.pki import CertificateAuthority

TD = "serviceradar"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return pki.load_or_create_ca(tmp_path_factory.mktemp("ca"), "identity test CA")


def _cert_with_sans(ca: CertificateAuthority, sans: list[x509.GeneralName] | None) -> bytes:
    """A CA-signed certificate with arbitrary SANs, for shapes the issuers refuse to make."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "spiffe://serviceradar/tenant/default/poller/demo",
            SpiffeId(IdentityKind.EDGE, TD, "default", "demo", None, None, ""),
        ),
        (
            "spiffe://serviceradar/tenant/acme-1/poller/Edge_01.dc-2:a",
            SpiffeId(IdentityKind.EDGE, TD, "acme-1", "Edge_01.dc-2:a", None, None, ""),
        ),
        (
            "spiffe://serviceradar/tenant/acme/operator/alice/role/viewer",
            SpiffeId(IdentityKind.OPERATOR, TD, "acme", None, "alice", "viewer", ""),
        ),
        (
            "spiffe://serviceradar/tenant/acme/operator/bob/role/admin",
            SpiffeId(IdentityKind.OPERATOR, TD, "acme", None, "bob", "admin", ""),
        ),
        (
            "spiffe://serviceradar/operator/admin/role/platform-admin",
            SpiffeId(IdentityKind.OPERATOR, TD, None, None, "admin", "platform-admin", ""),
        ),
        (
            "spiffe://serviceradar/operator/ops/role/operator",
            SpiffeId(IdentityKind.OPERATOR, TD, None, None, "ops", "operator", ""),
        ),
    ],
)
def test_accepted_forms(uri: str, expected: SpiffeId) -> None:
    parsed = parse_spiffe_id(uri, TD)
    assert parsed == SpiffeId(
        expected.kind,
        expected.trust_domain,
        expected.tenant,
        expected.poller_id,
        expected.operator,
        expected.role,
        uri,
    )


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("spiffe://other/tenant/default/poller/demo", "trust domain"),
        ("spiffe://serviceradar.evil/tenant/default/poller/demo", "trust domain"),
        ("spiffe://Serviceradar/tenant/default/poller/demo", "trust domain"),
        ("https://serviceradar/tenant/default/poller/demo", "spiffe://"),
        ("SPIFFE://serviceradar/tenant/default/poller/demo", "spiffe://"),
        ("spiffe://serviceradar/tenant/default/poller", "path must be"),
        ("spiffe://serviceradar/tenant/default/poller/", "empty"),
        ("spiffe://serviceradar/tenant/default", "path must be"),
        ("spiffe://serviceradar", "empty"),
        ("spiffe://serviceradar/", "empty"),
        ("spiffe://serviceradar/tenant/default/poller/demo/extra", "path must be"),
        ("spiffe://serviceradar/tenant/default/poller/demo/", "empty"),
        ("spiffe://serviceradar//tenant/default/poller/demo", "empty"),
        ("spiffe://serviceradar/tenant//poller/demo", "empty"),
        ("spiffe://serviceradar/tenant/Default/poller/demo", "tenant"),
        ("spiffe://serviceradar/tenant/-default/poller/demo", "tenant"),
        ("spiffe://serviceradar/tenant/" + "a" * 64 + "/poller/demo", "tenant"),
        ("spiffe://serviceradar/tenant/default/poller/de%2Fmo", "poller"),
        ("spiffe://serviceradar/tenant/default/poller/demo?x=1", "poller"),
        ("spiffe://serviceradar/tenant/default/poller/" + "p" * 129, "poller"),
        ("spiffe://serviceradar/tenant/default/poller/..", "poller"),
        ("spiffe://serviceradar/tenant/acme/operator/alice/role/root", "role"),
        ("spiffe://serviceradar/tenant/acme/operator/alice/role/Admin", "role"),
        ("spiffe://serviceradar/tenant/acme/operator/alice/role/platform-admin", "platform-admin"),
        ("spiffe://serviceradar/tenant/acme/operator/alice", "path must be"),
        ("spiffe://serviceradar/operator/alice/role/admin/extra", "path must be"),
        ("spiffe://serviceradar/poller/demo", "path must be"),
        ("spiffe://serviceradar/tenant/acme/poller/demo/role/admin", "path must be"),
        ("spiffe://serviceradar/" + "x/" * 1100, "longer than"),
        ("spiffe://serviceradar/tenant/default/poller/demo\n", "whitespace"),
        ("spiffe://serviceradar/tenant/default\n/poller/demo", "whitespace"),
        ("spiffe://serviceradar/tenant/default/poller/dem o", "whitespace"),
        ("spiffe://serviceradar/tenant/default/poller/d\u00e9mo", "non-ASCII"),
        ("", "not a spiffe"),
    ],
)
def test_rejected_forms(uri: str, reason: str) -> None:
    with pytest.raises(PermissionDenied, match=reason):
        parse_spiffe_id(uri, TD)


def test_identity_from_edge_pem(tmp_path: Path) -> None:
    dev = pki.ensure_dev_pki(tmp_path)
    pem = dev.edge_cert.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    identity = identity_from_pem(pem, TD)
    assert identity.kind is IdentityKind.EDGE
    assert (identity.tenant, identity.poller_id) == ("default", "demo")
    assert (identity.operator, identity.role) == (None, None)
    assert identity.serial == cert.serial_number
    assert identity.not_after == cert.not_valid_after_utc
    assert identity.spiffe_id == "spiffe://serviceradar/tenant/default/poller/demo"
    # Memoised: the same PEM yields the very same object without parsing again.
    assert identity_from_pem(pem, TD) is identity


def test_identity_from_operator_pem(tmp_path: Path) -> None:
    dev = pki.ensure_dev_pki(tmp_path)
    identity = identity_from_pem(dev.operator_cert.read_bytes(), TD)
    assert identity.kind is IdentityKind.OPERATOR
    assert (identity.tenant, identity.operator, identity.role) == (None, "admin", "platform-admin")


def test_other_trust_domain_is_refused(ca: CertificateAuthority) -> None:
    issued = pki.issue_edge_certificate(ca, "elsewhere", "default", "demo", timedelta(days=1))
    with pytest.raises(PermissionDenied, match="trust domain"):
        identity_from_pem(issued.cert_pem, TD)


@pytest.mark.parametrize(
    ("sans", "found"),
    [
        (
            [
                x509.UniformResourceIdentifier("spiffe://serviceradar/tenant/a/poller/p1"),
                x509.UniformResourceIdentifier("spiffe://serviceradar/tenant/b/poller/p2"),
            ],
            2,
        ),
        (
            [
                x509.UniformResourceIdentifier("spiffe://serviceradar/tenant/a/poller/p1"),
                x509.UniformResourceIdentifier("SPIFFE://serviceradar/tenant/b/poller/p2"),
            ],
            2,
        ),
        ([x509.DNSName("demo.example")], 0),
        ([x509.UniformResourceIdentifier("https://serviceradar/tenant/a/poller/p1")], 0),
        (None, 0),
    ],
)
def test_exactly_one_spiffe_san(
    ca: CertificateAuthority, sans: list[x509.GeneralName] | None, found: int
) -> None:
    with pytest.raises(PermissionDenied, match=f"exactly one spiffe:// URI SAN, found {found}"):
        identity_from_pem(_cert_with_sans(ca, sans), TD)


def test_non_spiffe_sans_beside_one_spiffe_san_are_ignored(ca: CertificateAuthority) -> None:
    pem = _cert_with_sans(
        ca,
        [
            x509.DNSName("edge.example"),
            x509.UniformResourceIdentifier("spiffe://serviceradar/tenant/a/poller/p1"),
        ],
    )
    assert identity_from_pem(pem, TD).poller_id == "p1"


def test_expired_certificate_is_unauthenticated(ca: CertificateAuthority) -> None:
    issued = pki.issue_edge_certificate(ca, TD, "default", "demo", timedelta(hours=1))
    assert identity_from_pem(issued.cert_pem, TD).poller_id == "demo"
    later = datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(Unauthenticated, match="expired"):
        identity_from_pem(issued.cert_pem, TD, now=later)


def test_garbage_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated):
        identity_from_pem(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", TD)


def test_identity_from_auth_context(ca: CertificateAuthority) -> None:
    issued = pki.issue_edge_certificate(ca, TD, "acme", "p9", timedelta(days=1))
    context = {"transport_security_type": [b"ssl"], "x509_pem_cert": [issued.cert_pem]}
    identity = identity_from_auth_context(context, TD)
    assert identity is not None
    assert (identity.tenant, identity.poller_id, identity.serial) == ("acme", "p9", issued.serial)
    assert identity_from_auth_context({"transport_security_type": [b"ssl"]}, TD) is None
    assert identity_from_auth_context({}, TD) is None
