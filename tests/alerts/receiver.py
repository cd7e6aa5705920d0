"""A real HTTP receiver on 127.0.0.1 for notifications: records every POST and answers with
the statuses it is told to, in order (200 once the script runs out)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: Any
    status: int


class Receiver:
    """http.server in a thread; `script` holds the statuses of the next answers."""

    def __init__(self, script: list[int] | None = None) -> None:
        self.script = list(script or [])
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.received.append(Received(self.path, dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        """The URL notifiers should POST to."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def bodies(self, where: Callable[[Received], bool] = lambda r: True) -> list[Any]:
        """Bodies received so far that `where` selects."""
        with self._lock:
            return [r.body for r in self.received if where(r)]

    async def wait_for(
        self, where: Callable[[Received], bool], count: int = 1, timeout: float = 20.0
    ) -> list[Received]:
        """The received requests `where` selects, once there are `count` (AssertionError after
        `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [r for r in self.received if where(r)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} wanted requests arrived; got {self.received}")
            await asyncio.sleep(0.05)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
