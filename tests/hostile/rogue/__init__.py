"""A rogue node for the hostile tests: a real ``meshagent join`` process with attacks switched on.

    python -m tests.hostile.rogue [--behave NAME]... join --data-dir D ...

Everything not switched on is the real node's code, so the honest nodes meet it
over the real protocols (libp2p, Noise, the bulk channel). Two kinds of hostility:

* **behaviours** (``--behave NAME``): patches installed before the node starts,
  changing how it answers (a pairing responder that keeps the joiner's proof,
  a bidder that lies, ...). Each is a function ``() -> None`` in a module's
  ``BEHAVIOURS``.
* **attacks**: an ``attack`` op on the rogue's control socket, called by the test
  when it wants the attack made, ``rogue.call("attack", {"name": NAME, ...})``.
  Each is ``async def (node, params) -> dict`` in a module's ``ATTACKS``; it gets
  the running :class:`~meshagent.node.node.Node` (its host, identity, stores)
  and answers what happened (what the victim said, whether it was refused).

Modules of this package register both by defining those dicts; every module
here is imported by ``__main__``. One module per area (pairing, results,
handoffs, adverts, ...), so the attacks of one area stay together.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from typing import Any

Behaviour = Callable[[], None]
Attack = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]


def rogue_node(data_dir: Any, *args: str, behave: tuple[str, ...] = (), name: str = "") -> Any:
    """A rogue ``meshagent join`` (a :class:`~meshagent.node.spawn.NodeProcess`) with ``behave`` switched on;
    ``args`` are ``join`` flags as for an honest node."""
    from meshagent.node.spawn import NodeProcess

    flags = [f for b in behave for f in ("--behave", b)]
    return NodeProcess(data_dir, *args, name=name, entry=("-m", "tests.hostile.rogue", *flags))


def registry() -> tuple[dict[str, Behaviour], dict[str, Attack]]:
    """Every behaviour and attack defined by the modules of this package."""
    behaviours: dict[str, Behaviour] = {}
    attacks: dict[str, Attack] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, fn in getattr(module, "BEHAVIOURS", {}).items():
            assert name not in behaviours, f"behaviour {name} defined twice"
            behaviours[name] = fn
        for name, fn in getattr(module, "ATTACKS", {}).items():
            assert name not in attacks, f"attack {name} defined twice"
            attacks[name] = fn
    return behaviours, attacks
