"""ServiceRadar Core: the gRPC control plane edge cores dial into over mutual TLS."""

__version__ = "0.1.0"
