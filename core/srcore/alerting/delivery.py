"""Sending notifications over HTTP: one JSON POST, retried with exponential backoff.

Each attempt is kept (status code or error, attempt number, time) so an operator can see
why a page did not arrive. A 2xx answer is success; 408, 425, 429 and 5xx answers and transport
errors are retried; other 4xx answers are not (a deleted Discord webhook answers 404 forever).
Errors never carry the URL: it may hold the receiver's secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from srcore import __version__

# Backoff between attempts grows from the configured base up to this delay.
MAX_BACKOFF = 30.0
_RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST to one receiver."""

    attempt: int
    success: bool
    status_code: int
    error: str
    at: datetime


class _Failed(Exception):
    def __init__(self, retryable: bool) -> None:
        super().__init__()
        self.retryable = retryable


def _retryable(error: BaseException) -> bool:
    return isinstance(error, _Failed) and error.retryable


class Sender:
    """POSTs JSON documents with retries; one shared HTTP connection pool."""

    def __init__(
        self,
        clock: Callable[[], datetime],
        attempts: int,
        backoff: float,
        timeout: float,
    ) -> None:
        self._clock = clock
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                headers={"user-agent": f"serviceradar-core/{__version__}"},
            )
        return self._client

    async def send(self, url: str, headers: Mapping[str, str], body: object) -> list[Attempt]:
        """POST `body` as JSON until the receiver accepts it or attempts run out; every attempt."""
        made: list[Attempt] = []
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff, min=self._backoff, max=MAX_BACKOFF),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    made.append(await self._post(len(made) + 1, url, headers, body))
                    last = made[-1]
                    if not last.success:
                        code = last.status_code
                        raise _Failed(code == 0 or code >= 500 or code in _RETRYABLE_STATUS)
        except _Failed:
            pass
        return made

    async def _post(self, number: int, url: str, headers: Mapping[str, str], body: object) -> Attempt:
        at = self._clock()
        try:
            response = await self._http().post(url, json=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            # str(exc) of a transport error names the failure, not the request URL.
            return Attempt(number, False, 0, f"{type(exc).__name__}: {exc}"[:512], at)
        if 200 <= response.status_code < 300:
            return Attempt(number, True, response.status_code, "", at)
        reason = response.reason_phrase or "error"
        return Attempt(number, False, response.status_code, f"HTTP {response.status_code} {reason}", at)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
