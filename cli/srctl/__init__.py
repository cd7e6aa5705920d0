"""srctl: the operator command line of ServiceRadar Core, a client of its public gRPC API."""
