"""The pure rules: package state machine, CIDRs, token format, secret encryption, grants, scope."""

from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from srcore.domain.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from srcore.domain.packages import TRANSITIONS, Package, PackageState, admit_edge, check_transition
from srcore.domain.tenancy import cidrs, token_ttl
from srcore.security import crypto, tokens
from srcore.security.principal import Principal, PrincipalKind
from srcore.security.rbac import ASSIGNABLE_ROLES, Role, can_grant
from srcore.settings import load_settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def package(state: PackageState, expires_in: timedelta = timedelta(hours=1)) -> Package:
    return Package(
        package_id="p" * 32,
        tenant="acme",
        partition="dc1",
        poller_id="p1",
        state=state,
        spiffe_id="spiffe://serviceradar/tenant/acme/poller/p1",
        cert_serial="abc",
        cert_not_after=NOW + timedelta(days=365),
        created_by="test",
        created_at=NOW,
        expires_at=NOW + expires_in,
        updated_at=NOW,
    )


@pytest.mark.parametrize("current", list(PackageState))
@pytest.mark.parametrize("target", list(PackageState))
def test_package_transitions_follow_the_table(current: PackageState, target: PackageState) -> None:
    if target in TRANSITIONS[current]:
        check_transition(package(current), target, NOW)
    else:
        with pytest.raises(FailedPrecondition):
            check_transition(package(current), target, NOW)


def test_the_state_machine_is_the_documented_one() -> None:
    allowed = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    assert allowed == {
        *(("issued", to) for to in ("delivered", "expired", "revoked", "deleted")),
        *(("delivered", to) for to in ("activated", "expired", "revoked", "deleted")),
        ("activated", "revoked"),
        ("expired", "deleted"),
        ("revoked", "deleted"),
    }


def test_a_pending_package_past_its_ttl_counts_as_expired() -> None:
    late = package(PackageState.DELIVERED, expires_in=-timedelta(seconds=1))
    assert late.effective_state(NOW) is PackageState.EXPIRED
    with pytest.raises(FailedPrecondition):
        check_transition(late, PackageState.ACTIVATED, NOW)
    with pytest.raises(Unauthenticated, match="expired"):
        admit_edge(late, NOW)
    # Activated packages do not expire: the TTL is the onboarding window.
    assert package(PackageState.ACTIVATED, -timedelta(days=1)).effective_state(NOW) is PackageState.ACTIVATED


@pytest.mark.parametrize("state", list(PackageState))
def test_only_delivered_and_activated_certificates_are_admitted(state: PackageState) -> None:
    if state in (PackageState.DELIVERED, PackageState.ACTIVATED):
        admit_edge(package(state), NOW)
    else:
        with pytest.raises(Unauthenticated):
            admit_edge(package(state), NOW)


def test_cidrs_are_canonical_and_named_when_wrong() -> None:
    assert cidrs("cidrs", [" 2001:db8::/32", "192.168.0.0/16", "10.0.0.0/8"]) == (
        "10.0.0.0/8",
        "192.168.0.0/16",
        "2001:db8::/32",
    )
    with pytest.raises(InvalidArgument) as caught:
        cidrs("cidrs", ["10.0.0.0/8", "10.0.0.1/8"])
    assert caught.value.field == "cidrs[1]"
    with pytest.raises(InvalidArgument):
        cidrs("cidrs", ["0.0.0.0/0"] * 2)
    with pytest.raises(InvalidArgument):
        cidrs("cidrs", [f"10.{i}.0.0/16" for i in range(257)])


def test_token_lifetimes() -> None:
    assert token_ttl(None) == timedelta(days=90)
    assert token_ttl(60) == timedelta(minutes=1)
    for bad in (59, 367 * 86400):
        with pytest.raises(InvalidArgument):
            token_ttl(bad)


def test_tokens_round_trip_and_never_echo_garbage() -> None:
    new = tokens.generate(tokens.TokenKind.API)
    presented = tokens.parse(new.secret)
    assert (presented.kind, presented.token_id, presented.digest) == (
        tokens.TokenKind.API,
        new.token_id,
        new.digest,
    )
    assert tokens.same_digest(presented.digest, new.digest)
    assert new.digest != new.secret and len(new.digest) == 64
    assert tokens.generate(tokens.TokenKind.DOWNLOAD).secret.startswith("srd_")
    for garbage in ("", "Bearer x", new.secret + "x", new.secret.replace("srt_", "srx_"), "password123"):
        with pytest.raises(Unauthenticated) as caught:
            tokens.parse(garbage)
        assert not garbage or garbage not in str(caught.value)


def test_secrets_are_sealed_bound_to_their_record_and_survive_rotation() -> None:
    old = crypto.keyring([crypto.new_key_entry("2025")])
    sealed = old.seal(b"private key", b"package:1")
    assert b"private key" not in sealed
    assert old.open(sealed, b"package:1") == b"private key"
    with pytest.raises(crypto.DecryptionError):
        old.open(sealed, b"package:2")  # moved to another row
    with pytest.raises(crypto.DecryptionError):
        old.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"package:1")  # tampered

    # Rotation: the new key first seals, the old one still opens what it sealed.
    rotated = crypto.Keyring((crypto.parse_key(crypto.new_key_entry("2026")), old.keys[0]))
    assert rotated.open(sealed, b"package:1") == b"private key"
    assert rotated.open(rotated.seal(b"x", b"a"), b"a") == b"x"
    with pytest.raises(crypto.DecryptionError, match="2026"):
        old.open(rotated.seal(b"x", b"a"), b"a")


def test_bad_keys_are_refused_without_showing_them() -> None:
    short = base64.b64encode(b"k" * 16).decode()
    for entry in (f"k1:{short}", "k1:not base64!", "no-colon", f"bad id:{short}"):
        with pytest.raises(InvalidArgument) as caught:
            crypto.parse_key(entry)
        assert short not in str(caught.value)
    key = crypto.new_key_entry("same")
    with pytest.raises(InvalidArgument):
        crypto.keyring([key, key])


def test_the_embedded_key_file_is_private_and_stable(tmp_path: Path) -> None:
    first = crypto.load_or_create_key_file(tmp_path)
    second = crypto.load_or_create_key_file(tmp_path)
    assert first == second
    mode = stat.S_IMODE((tmp_path / crypto.KEY_FILE_NAME).stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [crypto.KEY_FILE_NAME]


def test_roles_grant_at_most_themselves() -> None:
    for granter in ASSIGNABLE_ROLES:
        for role in ASSIGNABLE_ROLES:
            assert can_grant(granter, role) == (
                ASSIGNABLE_ROLES.index(role) <= ASSIGNABLE_ROLES.index(granter)
            )
    assert not can_grant(Role.PACKAGE_DOWNLOAD, Role.VIEWER)
    assert not can_grant(Role.PLATFORM_ADMIN, Role.PACKAGE_DOWNLOAD)


def test_scope_keeps_tenant_principals_in_their_tenant() -> None:
    tenant = Principal(PrincipalKind.TOKEN, "abc", Role.ADMIN, "acme")
    assert tenant.scope("") == "acme" and tenant.scope("acme") == "acme"
    assert tenant.scope("", all_tenants=True) == "acme"
    with pytest.raises(NotFound):
        tenant.scope("other")
    assert tenant.sees("acme") and not tenant.sees("other") and not tenant.sees(None)
    platform = Principal(PrincipalKind.CERTIFICATE, "spiffe://x", Role.PLATFORM_ADMIN, None)
    assert platform.scope("", all_tenants=True) is None
    assert platform.scope("") == "default" and platform.scope("other") == "other"
    assert platform.sees("anything") and platform.sees(None)
    with pytest.raises(InvalidArgument):
        platform.scope("Not A Tenant")


def test_access_settings_are_validated() -> None:
    key = crypto.new_key_entry("k1")
    settings = load_settings(environ={"SRCORE_SECRET_KEYS": key, "SRCORE_ADMIN_LISTEN": "127.0.0.1:50052"})
    assert settings.secret_keys == [key] and settings.admin_listen == "127.0.0.1:50052"
    for env in (
        {"SRCORE_SECRET_KEYS": "k1:short"},
        {"SRCORE_ADMIN_LISTEN": "127.0.0.1:50051"},
        {"SRCORE_PACKAGE_TTL": "10"},
        {"SRCORE_PACKAGE_CA_CERT": "/ca.pem"},
    ):
        with pytest.raises(InvalidArgument):
            load_settings(environ=env)
