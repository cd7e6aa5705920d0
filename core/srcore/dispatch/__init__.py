"""Dispatch: placing work items on pollers (leader-only) and pushing configurations to them."""
