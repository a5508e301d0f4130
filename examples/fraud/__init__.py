"""Fraud rules in continuous SQL: `python -m examples.fraud [--broker URL] [--kill]`."""
