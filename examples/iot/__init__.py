"""Sensor readings through continuous SQL: `python -m examples.iot [--broker URL] [--kill]`."""
