"""Domain errors. The api layer maps each to one gRPC status code; nothing else does."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a caller is meant to see; the message is safe to show."""


class InvalidArgument(DomainError):
    """Malformed or out-of-range input. `field` names the offending field path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(DomainError):
    """The entity does not exist, or the caller may not know that it does."""


class AlreadyExists(DomainError):
    """Creating an entity that already exists."""


class PermissionDenied(DomainError):
    """The caller's identity or role does not allow this."""


class Unauthenticated(DomainError):
    """The caller did not prove who it is."""


class FailedPrecondition(DomainError):
    """The system is not in a state that allows this (e.g. an illegal transition)."""


class ResourceExhausted(DomainError):
    """Over a budget; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency is down; the call can be retried."""


class Aborted(DomainError):
    """A concurrency conflict (e.g. the same batch written by two streams); retry."""
