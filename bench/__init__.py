"""Mercurio's benchmark: `python -m bench.run` (or `make bench`); see bench/README.md.

It starts the service in its own process, drives it from separate load-generator processes with
raw asyncio sockets, measures memory per idle stream, broadcast fan-out, durable unicast
publishing, and the same work done by a bare asyncio server (the ceiling), then prints a table
and writes JSON to bench/results/<timestamp>.json.
"""
