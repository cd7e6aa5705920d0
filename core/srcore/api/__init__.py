"""gRPC servicers: proto <-> domain conversion, status codes, auth context. Thin."""
