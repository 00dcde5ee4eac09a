"""Mesh-scale discrete-event simulation of meshagent's placement, driving the real protocol code.

The simulation never re-implements a placement decision: calls for bids, bids,
reservations, bounded fan-out, privacy filtering, policies and reputation all come
from :mod:`meshagent.protocol`. What lives here is the world around that code —
devices with sourced speeds, links, batteries, prices, workloads after the seed,
churn and lying peers — and the baselines people would pick instead.

Run it with ``python -m simulations run [--quick] [--json] [--out DIR]``.
"""

__all__: list[str] = []
