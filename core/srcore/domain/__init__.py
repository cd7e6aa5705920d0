"""The rules of the control plane: pure Python, no I/O and no client library imports."""
