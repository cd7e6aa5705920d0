"""How late the event loop runs what is due: the one number that shows a blocked loop.

Every RPC, stream and leader job of a replica shares one asyncio loop. Work that holds it (a
long synchronous step, a full garbage collection) delays every call at once, and no per-RPC
metric names it. A timer due every `interval` measures how late it fires.
"""

from __future__ import annotations

import asyncio
import logging
import time

from srcore.observability.metrics import EVENT_LOOP_LAG

log = logging.getLogger(__name__)

LAG_INTERVAL = 0.25
# A lag this long is logged as well as counted (at most once per LAG_LOG_EVERY seconds).
LAG_WARNING = 0.5
LAG_LOG_EVERY = 60.0


async def watch_loop_lag(stopping: asyncio.Event, interval: float = LAG_INTERVAL) -> None:
    """Observe the loop's lag into `srcore_event_loop_lag_seconds` until `stopping` is set."""
    logged = -LAG_LOG_EVERY
    while not stopping.is_set():
        due = time.monotonic() + interval
        await asyncio.sleep(interval)
        now = time.monotonic()
        lag = max(0.0, now - due)
        EVENT_LOOP_LAG.observe(lag)
        if lag >= LAG_WARNING and now - logged >= LAG_LOG_EVERY:
            logged = now
            log.warning(
                "event loop ran %.0f ms late: something held it (docs/architecture.md, watching a replica)",
                lag * 1000,
            )
