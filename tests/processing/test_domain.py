"""Pure processing rules: the checker fold and sweep scope."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from srcore.domain.model import CheckerState
from srcore.domain.processing import (
    CheckOutcome,
    ProcessingPolicy,
    addresses_within,
    fold_check_results,
    sweep_network,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def outcomes(pattern: str) -> list[CheckOutcome]:
    """'ffp' -> fail, fail, pass, one second apart."""
    return [CheckOutcome(c == "p", T0 + timedelta(seconds=i)) for i, c in enumerate(pattern)]


def fold(pattern: str, state: CheckerState = CheckerState.ACTIVE, failures: int = 0, n: int = 3):  # type: ignore[no-untyped-def]
    return fold_check_results(
        state, failures, None, outcomes(pattern), tenant="t", entity_id="p/a/c", failing_after=n
    )


def test_n_minus_one_failures_stay_active_and_are_counted() -> None:
    result = fold("ff")
    assert (result.state, result.consecutive_failures, result.transitions) == (CheckerState.ACTIVE, 2, [])


def test_the_nth_failure_in_a_row_makes_the_checker_failing_at_its_time() -> None:
    result = fold("ff", failures=1)
    assert (result.state, result.consecutive_failures) == (CheckerState.FAILING, 3)
    (moved,) = result.transitions
    assert (moved.entity_type, moved.entity_id, moved.from_state, moved.to_state) == (
        "checker", "p/a/c", "active", "failing"
    )  # fmt: skip
    assert moved.at == T0 + timedelta(seconds=1) and result.state_changed_at == moved.at
    assert moved.reason.startswith("check_failed")


def test_a_pass_ends_the_run_and_recovers_a_failing_checker() -> None:
    assert fold("ffpf").state == CheckerState.ACTIVE and fold("ffpf").consecutive_failures == 1
    recovered = fold("p", CheckerState.FAILING, failures=5)
    assert (recovered.state, recovered.consecutive_failures) == (CheckerState.ACTIVE, 0)
    assert [t.to_state for t in recovered.transitions] == ["active"]


def test_a_flapping_check_records_every_flap_in_order() -> None:
    result = fold("fffpfff", n=3)
    assert [(t.from_state, t.to_state) for t in result.transitions] == [
        ("active", "failing"),
        ("failing", "active"),
        ("active", "failing"),
    ]
    assert result.state_changed_at == T0 + timedelta(seconds=6)


@pytest.mark.parametrize("held", [CheckerState.PAUSED, CheckerState.DISABLED])
def test_paused_and_disabled_checkers_ignore_results(held: CheckerState) -> None:
    result = fold("ffff", held, failures=1)
    assert (result.state, result.consecutive_failures, result.transitions) == (held, 1, [])


def test_failing_after_one_fails_on_the_first_failure() -> None:
    assert fold("f", n=1).state == CheckerState.FAILING


def test_policy_refuses_bounds_below_one() -> None:
    with pytest.raises(ValueError, match="failing_after"):
        ProcessingPolicy(failing_after=0)
    with pytest.raises(ValueError, match="max_open_ports_per_host"):
        ProcessingPolicy(max_open_ports_per_host=0)


def test_a_sweep_scope_is_its_cidr_or_nothing() -> None:
    assert sweep_network("10.0.0.0/24") == ipaddress.ip_network("10.0.0.0/24")
    assert sweep_network("10.0.0.7/24") == ipaddress.ip_network("10.0.0.0/24")  # host bits tolerated
    assert sweep_network("2001:db8::/64") == ipaddress.ip_network("2001:db8::/64")
    assert sweep_network("10.0.0.9") == ipaddress.ip_network("10.0.0.9/32")
    assert sweep_network("") is None and sweep_network("hosts.txt") is None


def test_addresses_within_a_network_keep_their_order_and_skip_other_families() -> None:
    network = ipaddress.ip_network("10.0.0.0/30")
    found = addresses_within(["10.0.0.3", "10.0.0.4", "::1", "10.0.0.0", "bogus"], network)
    assert found == ["10.0.0.3", "10.0.0.0"]
    assert addresses_within(["2001:db8::5", "10.0.0.1"], ipaddress.ip_network("2001:db8::/64")) == [
        "2001:db8::5"
    ]
