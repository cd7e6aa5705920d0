"""Alerting: the evaluator and deliverer leader jobs, operators' changes, and notifiers."""
