"""Runnable examples: `python -m examples.shop`."""
