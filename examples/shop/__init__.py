"""A small shop on the embedded log: order, inventory, payment and shipping services.

Run it with `.venv/bin/python -m examples.shop`.
"""
