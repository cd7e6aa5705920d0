"""The raw limit for unary calls: an mTLS grpc.aio server that answers every call at once.

Run by bench/heartbeat.py with the same certificates and channel options as the core.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc


async def serve(port: int, pki: Path) -> None:
    """Answer every unary call with an empty message, parsing nothing."""

    async def answer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return b""

    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(answer)

    class Generic(grpc.GenericRpcHandler):
        def service(
            self, handler_call_details: grpc.HandlerCallDetails
        ) -> grpc.RpcMethodHandler[bytes, bytes]:
            return handler

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Generic(),))
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
