"""The dev PKI and certificate issuance, checked with cryptography's RFC 5280 path validation."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from srcore.domain.errors import InvalidArgument
from srcore.security import pki
from srcore.security.pki import DevPki, IssuedCertificate


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return pki.ensure_dev_pki(tmp_path_factory.mktemp("pki") / "tls")


def _all_files(d: DevPki) -> list[Path]:
    return [
        d.ca_cert,
        d.ca_key,
        d.server_cert,
        d.server_key,
        d.operator_cert,
        d.operator_key,
        d.edge_cert,
        d.edge_key,
    ]


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _verify_client(ca: Path, cert: x509.Certificate) -> None:
    store = verification.Store([_load(ca)])
    verifier = verification.PolicyBuilder().store(store).build_client_verifier()
    verifier.verify(cert, [])


def test_files_names_and_modes(dev: DevPki) -> None:
    assert {p.name for p in _all_files(dev)} == {
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "operator.pem",
        "operator-key.pem",
        "edge-default-demo.pem",
        "edge-default-demo-key.pem",
    }
    assert stat.S_IMODE(dev.directory.stat().st_mode) == 0o700
    for key in (dev.ca_key, dev.server_key, dev.operator_key, dev.edge_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    assert not [p for p in dev.directory.iterdir() if p.name.endswith(".tmp")]


def test_second_call_rewrites_nothing(dev: DevPki) -> None:
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in _all_files(dev)}
    again = pki.ensure_dev_pki(dev.directory)
    assert again == dev
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in _all_files(dev)} == before


def test_server_certificate_verifies_for_every_host(dev: DevPki) -> None:
    cert = _load(dev.server_cert)
    store = verification.Store([_load(dev.ca_cert)])
    for subject in (
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ):
        verifier = verification.PolicyBuilder().store(store).build_server_verifier(subject)
        verifier.verify(cert, [])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert _eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    wrong_host = verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName("example.com"))
    with pytest.raises(verification.VerificationError):
        wrong_host.verify(cert, [])


def test_ca_and_leaf_validity(dev: DevPki) -> None:
    ca, leaf = _load(dev.ca_cert), _load(dev.edge_cert)
    ca_days = (ca.not_valid_after_utc - datetime.now(UTC)).days
    leaf_days = (leaf.not_valid_after_utc - datetime.now(UTC)).days
    assert 3640 <= ca_days <= 3650
    assert 360 <= leaf_days <= 365
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_edge_certificate(dev: DevPki) -> None:
    cert = _load(dev.edge_cert)
    _verify_client(dev.ca_cert, cert)
    assert _uris(cert) == ["spiffe://serviceradar/tenant/default/poller/demo"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "demo"
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_dev_operator_certificate(dev: DevPki) -> None:
    cert = _load(dev.operator_cert)
    _verify_client(dev.ca_cert, cert)
    assert _uris(cert) == ["spiffe://serviceradar/operator/admin/role/platform-admin"]
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_tenant_operator_certificate(dev: DevPki) -> None:
    ca = pki.load_or_create_ca(dev.directory, "unused: the CA exists")
    issued = pki.issue_operator_certificate(ca, "serviceradar", "alice", "viewer", "acme", timedelta(days=1))
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    _verify_client(dev.ca_cert, cert)
    assert _uris(cert) == ["spiffe://serviceradar/tenant/acme/operator/alice/role/viewer"]
    assert issued.serial == cert.serial_number
    assert issued.not_after == cert.not_valid_after_utc


def test_load_or_create_ca_reuses_the_existing_ca(dev: DevPki) -> None:
    ca = pki.load_or_create_ca(dev.directory, "ignored")
    assert ca.cert_pem == dev.ca_cert.read_bytes()


def test_ca_certificate_without_key_is_refused(tmp_path: Path) -> None:
    pki.load_or_create_ca(tmp_path, "test CA")
    (tmp_path / "ca-key.pem").unlink()
    with pytest.raises(FileNotFoundError, match=r"ca-key\.pem"):
        pki.load_or_create_ca(tmp_path, "test CA")


def test_new_host_reissues_only_the_server_certificate(tmp_path: Path) -> None:
    first = pki.ensure_dev_pki(tmp_path)
    kept = {p: p.read_bytes() for p in (first.ca_cert, first.edge_cert, first.operator_cert)}
    old_server = first.server_cert.read_bytes()
    pki.ensure_dev_pki(tmp_path, hosts=("localhost", "127.0.0.1", "core.example", "::1"))
    assert {p: p.read_bytes() for p in kept} == kept
    assert first.server_cert.read_bytes() != old_server
    san = _load(first.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "core.example"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


def test_expired_leaf_is_reissued(tmp_path: Path) -> None:
    first = pki.ensure_dev_pki(tmp_path)
    ca = pki.load_or_create_ca(tmp_path, "unused")
    expired = pki.issue_edge_certificate(
        ca,
        "serviceradar",
        "default",
        "demo",
        timedelta(days=1),
        now=datetime.now(UTC) - timedelta(days=2),
    )
    pki.write_pem_pair(first.edge_cert, first.edge_key, expired)
    pki.ensure_dev_pki(tmp_path)
    assert _load(first.edge_cert).not_valid_after_utc > datetime.now(UTC)


@pytest.mark.parametrize(
    ("tenant", "poller"),
    [("Acme", "p1"), ("acme", ""), ("acme", "p/1"), ("-acme", "p1"), ("acme", "p 1")],
)
def test_edge_issuance_validates_segments(dev: DevPki, tenant: str, poller: str) -> None:
    ca = pki.load_or_create_ca(dev.directory, "unused")
    with pytest.raises(InvalidArgument):
        pki.issue_edge_certificate(ca, "serviceradar", tenant, poller, timedelta(days=1))


@pytest.mark.parametrize(("role", "tenant"), [("root", None), ("Admin", "acme"), ("platform-admin", "acme")])
def test_operator_issuance_validates_role(dev: DevPki, role: str, tenant: str | None) -> None:
    ca = pki.load_or_create_ca(dev.directory, "unused")
    with pytest.raises(InvalidArgument, match="role"):
        pki.issue_operator_certificate(ca, "serviceradar", "alice", role, tenant, timedelta(days=1))


def test_validity_must_be_positive(dev: DevPki) -> None:
    ca = pki.load_or_create_ca(dev.directory, "unused")
    with pytest.raises(InvalidArgument, match="validity"):
        pki.issue_server_certificate(ca, ["localhost"], timedelta(0))


def test_write_pem_pair_modes(tmp_path: Path, dev: DevPki) -> None:
    ca = pki.load_or_create_ca(dev.directory, "unused")
    issued: IssuedCertificate = pki.issue_server_certificate(ca, ["localhost"], timedelta(days=1))
    pki.write_pem_pair(tmp_path / "c.pem", tmp_path / "k.pem", issued)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c.pem").stat().st_mode) == 0o644
    assert (tmp_path / "k.pem").read_bytes() == issued.key_pem


@pytest.mark.parametrize("trust_domain", ["", "Example", "a/b", "sr\n"])
def test_trust_domain_is_validated(dev: DevPki, trust_domain: str) -> None:
    ca = pki.load_or_create_ca(dev.directory, "unused")
    with pytest.raises(InvalidArgument, match="trust_domain"):
        pki.issue_edge_certificate(ca, trust_domain, "acme", "p1", timedelta(days=1))
