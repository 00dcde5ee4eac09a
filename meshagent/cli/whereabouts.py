"""``meshagent agents`` and ``meshagent logs``: where each agent is, and what it printed.

An agent may have moved: the node that handed it over knows the peer (its
handoff records), the receiver knows where it came from and who owns it, and
once the agent ends elsewhere its result comes back to its owner. These
commands read all three, so that an agent is never shown as "moved to -" and
``logs`` on the node it left says where the rest of its output is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from meshagent.cli.node import data_dir_of

__all__ = ["list_agents", "show_logs"]


def _whereabouts(data_dir: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Names of the peers this node knows, and per agent the peer it moved to and the peer it came from
    (from the node's handoff records; an agent moved by an auction is in its placements too)."""
    from meshagent.cli.peers import label
    from meshagent.node.control import call

    names = {p["peer_id"]: label(p) for p in call(data_dir, "peers")["peers"]}
    moved_to: dict[str, str] = {}
    came_from: dict[str, str] = {}
    rows = sorted(call(data_dir, "handoffs")["handoffs"], key=lambda r: r["generation"])
    for r in rows:
        if r["state"] in ("aborted", "rejected"):
            continue
        (moved_to if r["role"] == "sender" else came_from)[r["agent"]] = r["peer"]
    return names, moved_to, came_from


def list_agents(args: argparse.Namespace) -> int:
    from meshagent.cli.peers import short_id
    from meshagent.node.control import call

    data_dir = data_dir_of(args)
    result = call(data_dir, "agents", {})
    rows = result.get("agents", [])
    if args.json:
        print(json.dumps(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    names, moved_to, came_from = _whereabouts(data_dir)

    def who(peer: str) -> str:
        return names.get(peer, short_id(peer))

    table = Table(title="agents", show_lines=True)
    table.add_column("agent", no_wrap=True)
    for column in ("status", "calls", "exit", "privacy", "where", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        agent_id = str(row["agent_id"])
        moves = [p["peer"] for p in row.get("placements", [])]
        here, owner = row.get("node"), row.get("owner")
        status, exit_code, calls = str(row["status"]), row.get("exit_code"), row["host_calls"]
        if status == "moved":
            # The owner's custody record knows the current holder, also after several hops.
            to = row.get("held_by") or moved_to.get(agent_id) or (moves[-1] if moves else None)
            where = f"moved to {who(to)}" if to else "moved"
            final = _result(data_dir, agent_id)
            if final is not None:  # it ended there and its result came back here
                status, exit_code = f"{final.get('status')} there", final.get("exit_code")
                calls = final.get("host_calls", calls)
        else:
            where = "here"
        came = came_from.get(agent_id)
        if came:
            where += f"\nfrom {who(came)}" + (" (owner)" if came == owner else "")
        if owner and owner not in (here, came):
            where += f"\nowner {who(owner)}"
        if len(moves) > 1:
            where += "\nauctions: " + " → ".join(who(m) for m in moves)
        agent = agent_id + (f"\nchild of {row['parent_id']}" if row.get("parent_id") else "")
        table.add_row(agent, status, str(calls), "" if exit_code in (None, -1) else str(exit_code),
                      str(row.get("privacy", "")), where, str(row.get("error") or ""))
    Console().print(table)
    return 0


def _result(data_dir: Path, agent_id: str) -> dict[str, Any] | None:
    """The final outcome of an agent that ended elsewhere, once its result came back to this node."""
    from meshagent.errors import MeshError
    from meshagent.node.control import call

    try:
        return call(data_dir, "result", {"agent_id": agent_id})
    except MeshError:  # not back yet (or this node does not own it)
        return None


def show_logs(args: argparse.Namespace) -> int:
    """An agent's output; for an agent that moved away, its result if it came back, else where it is."""
    from meshagent.node.control import call

    data_dir = data_dir_of(args)
    result = call(data_dir, "logs", {"agent_id": args.agent})
    listed = {a["agent_id"]: a for a in call(data_dir, "agents", {}).get("agents", [])}
    status = listed.get(args.agent, {}).get("status")
    note = None
    if status == "moved":
        final = _result(data_dir, args.agent)
        if final is not None:
            result = {**result, "stdout": final.get("stdout", ""), "stderr": final.get("stderr", ""),
                      "status": final.get("status")}
        else:
            from meshagent.cli.peers import short_id

            names, moved_to, _ = _whereabouts(data_dir)
            to = moved_to.get(args.agent)
            place = names.get(to, short_id(to)) if to else "another node"
            note = (f"meshagent: agent {args.agent} moved to {place}: this is its output up to the move; "
                    f"`meshagent logs {args.agent}` on that node shows the rest, and its result comes back here "
                    "when it ends")
    if args.json:
        print(json.dumps(result))
    else:
        sys.stdout.write(result.get("stdout", ""))
        sys.stdout.flush()
        sys.stderr.write(result.get("stderr", ""))
    if note:
        print(note, file=sys.stderr)
    return 0
