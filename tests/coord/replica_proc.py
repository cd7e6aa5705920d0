"""A replica in a child process, for the failover tests (see support.ReplicaProcess).

    python -m tests.coord.replica_proc <endpoints,comma-separated> <prefix> <replica id> <ttl>

Prints JSON lines: {"event": "started"} once joined, {"leader": bool, "token": int, "t": float}
whenever `is_leader()` or the fencing token changes and on the first check after a stall
(t is time.monotonic(), a system-wide clock), and {"event": "closed"} after SIGTERM made it
resign.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from srcore.coord.etcd import EtcdCoordinator
from srcore.domain.coordination import ReplicaInfo


def emit(line: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once."""
    print(json.dumps(line), flush=True)


async def main(endpoints: str, prefix: str, replica_id: str, lease_ttl: float) -> None:
    """Join, report leadership changes until SIGTERM, then resign."""
    coordinator = EtcdCoordinator(endpoints.split(","), prefix, lease_ttl, op_timeout=1.0)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await coordinator.start(ReplicaInfo(replica_id, "child.test:50051", "test", time.time()))
    emit({"event": "started"})
    last: tuple[bool, int] | None = None
    checked = time.monotonic()
    while not stop.is_set():
        info = coordinator.leader() if coordinator.is_leader() else None
        state = (info is not None, info.fencing_token if info else 0)
        now = time.monotonic()
        # After a stall (SIGSTOP) report even an unchanged claim: it is the one under test.
        if state != last or now - checked > 0.5:
            emit({"leader": state[0], "token": state[1], "t": now})
            last = state
        checked = now
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.02):
                await stop.wait()
    await coordinator.close()
    emit({"event": "closed"})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
