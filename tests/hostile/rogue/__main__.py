"""Run the rogue node: ``python -m tests.hostile.rogue [--behave NAME]... join ...`` (see the package docstring)."""

from __future__ import annotations

import sys
from typing import Any

import meshagent.node.node as node_module
from meshagent.cli import main
from meshagent.node.control import ControlServer, Emit

from . import registry


def _install_attack_op(attacks: dict[str, Any]) -> None:
    running: list[node_module.Node] = []
    real_run = node_module.Node.run

    async def run(self: node_module.Node, **kwargs: Any) -> None:
        running.append(self)
        await real_run(self, **kwargs)

    async def attack(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        name = params.get("name")
        if name not in attacks:
            raise KeyError(f"no attack {name!r}; known: {sorted(attacks)}")
        return await attacks[name](running[0], params)

    class RogueControl(ControlServer):
        def __init__(self, data_dir: Any, handlers: Any) -> None:
            super().__init__(data_dir, {**handlers, "attack": attack})

    node_module.Node.run = run  # type: ignore[method-assign]
    node_module.ControlServer = RogueControl  # type: ignore[misc]


def _main(argv: list[str]) -> int:
    behaviours, attacks = registry()
    while argv[:1] == ["--behave"]:
        name = argv[1]
        if name not in behaviours:
            raise SystemExit(f"rogue: no behaviour {name!r}; known: {sorted(behaviours)}")
        behaviours[name]()
        argv = argv[2:]
    _install_attack_op(attacks)
    return main(argv)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
