"""TLS material, peer identity from certificates, tokens, RBAC and secret encryption."""
