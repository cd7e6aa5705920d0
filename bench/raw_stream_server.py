"""The raw limit for ReportResults: parse each request, acknowledge each chunk, store nothing.

Run by bench/ingest.py with the same certificates as the core.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from serviceradar.edge.v1 import edge_service_pb2 as pb
from serviceradar.edge.v1 import edge_service_pb2_grpc as pb_grpc
from serviceradar.edge.v1 import results_pb2 as rpb


class Discard(pb_grpc.EdgeServiceServicer):
    """Answers opens and chunks at once; the generated code has already parsed them."""

    async def ReportResults(
        self, request_iterator: AsyncIterator[pb.ReportResultsRequest], context: Any
    ) -> AsyncIterator[pb.ReportResultsResponse]:
        """Ack every chunk immediately with a full credit window."""
        async for request in request_iterator:
            if request.HasField("open"):
                ack = rpb.BatchAck(
                    batch_id=request.open.batch_id, committed_index=-1, credits=8, chunk_index=-1
                )
            else:
                chunk = request.chunk
                ack = rpb.BatchAck(
                    batch_id=chunk.batch_id,
                    committed_index=chunk.index,
                    credits=8,
                    chunk_index=chunk.index,
                    accepted=len(chunk.sweep_hosts.results),
                )
            yield pb.ReportResultsResponse(ack=ack)


async def serve(port: int, pki: Path) -> None:
    """Serve the discarding EdgeService over mTLS on 127.0.0.1:port."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)])
    pb_grpc.add_EdgeServiceServicer_to_server(Discard(), server)  # type: ignore[abstract]
    credentials = grpc.ssl_server_credentials(
        [((pki / "server-key.pem").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    print("raw serving", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
