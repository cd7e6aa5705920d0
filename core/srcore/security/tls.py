"""gRPC TLS credentials for the server and for clients (srctl, tests), and PEM loading."""

from __future__ import annotations

from pathlib import Path

import grpc


def load_pem(path: Path) -> bytes:
    """Read a PEM file, failing with a message that names the path when it is missing or not PEM."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"TLS file not found: {path}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"TLS file {path} does not contain PEM data")
    return data


def server_credentials(
    cert_chain_pem: bytes, key_pem: bytes, client_ca_pem: bytes, require_client_auth: bool
) -> grpc.ServerCredentials:
    """Server TLS credentials; with `require_client_auth` the handshake demands a client
    certificate chaining to `client_ca_pem`, with the clientAuth extended key usage, unexpired.

    Without `require_client_auth` the server does not even ask for a client certificate
    (grpc python maps False to GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE and exposes no
    request-and-verify mode), so every peer is anonymous: certificate identities exist only
    on a port that requires client authentication.
    """
    return grpc.ssl_server_credentials(
        [(key_pem, cert_chain_pem)],
        root_certificates=client_ca_pem,
        require_client_auth=require_client_auth,
    )


def channel_credentials(
    ca_pem: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> grpc.ChannelCredentials:
    """Client TLS credentials trusting `ca_pem`, presenting a client certificate when given."""
    if (cert_pem is None) != (key_pem is None):
        raise ValueError("a client certificate and its key must be given together")
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )
