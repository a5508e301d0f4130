"""Market data through continuous SQL: `python -m examples.trading [--broker URL] [--kill]`."""
