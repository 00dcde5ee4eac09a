"""Handoff commands: ``migrate AGENT --to PEER``, ``snapshot export``, ``snapshot import``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from meshagent.cli.node import add_data_dir, data_dir_of
from meshagent.cli.peers import label, resolve_peer

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate", help="hand an agent over to a peer (sealed for it alone, exactly once)")
    add_data_dir(p)
    p.add_argument("agent", help="agent id")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="PEER", help="the receiving node: its name, peer id, or a unique part of the id")
    target.add_argument("--auction", action="store_true", help="auction the agent's next LLM step among the peers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("snapshot", help="sealed snapshot files: export and import")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    e = verbs.add_parser("export", help="seal an agent into FILE (to this node: a backup; --to PEER: moves it)")
    add_data_dir(e)
    e.add_argument("agent")
    e.add_argument("file", type=Path)
    e.add_argument("--to", metavar="PEER", help="seal for this peer (name, peer id or a unique part of it); the agent leaves this node")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export)
    i = verbs.add_parser("import", help="resume an agent from a FILE sealed to this node")
    add_data_dir(i)
    i.add_argument("file", type=Path)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_import)


def _call(args: argparse.Namespace, op: str, params: dict[str, Any]) -> dict[str, Any]:
    from meshagent.node.control import call_streaming

    if args.json or not sys.stderr.isatty():  # a progress bar only for a person watching
        return call_streaming(data_dir_of(args), op, params, timeout=None)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task(op, total=None)

        def on_event(event: dict[str, Any]) -> None:
            total = event.get("total") or None
            progress.update(task, description=str(event.get("phase", op)), completed=event.get("done", 0), total=total)

        return call_streaming(data_dir_of(args), op, params, on_event=on_event, timeout=None)


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.auction:
        from meshagent.node.control import call

        result = call(data_dir_of(args), "migrate_auction", {"agent": args.agent})
        print(json.dumps(result) if args.json else f"{args.agent}: its next LLM step will be auctioned")
        return 0
    to = resolve_peer(data_dir_of(args), args.to)
    result = _call(args, "migrate", {"agent": args.agent, "to": to["peer_id"]})
    if args.json:
        print(json.dumps(result))
        return 0
    state = "resumed" if result.get("resumed") else "committed (the receiver will confirm)"
    print(f"{result['agent']} → {label(to)}: {state}, generation {result['generation']}, "
          f"{result['bytes']} sealed bytes via {result['via']} in {result['seconds']:.2f} s")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"agent": args.agent, "file": str(args.file.resolve())}
    to = resolve_peer(data_dir_of(args), args.to) if args.to else None
    if to is not None:
        params["to"] = to["peer_id"]
    result = _call(args, "snapshot_export", params)
    if args.json:
        print(json.dumps(result))
        return 0
    whom = "this node (backup)" if to is None else f"{label(to)} — the agent has left this node; the file is its only copy"
    print(f"sealed {result['agent']} (generation {result['generation']}, {result['bytes']} bytes) to {whom}: {result['file']}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    result = _call(args, "snapshot_import", {"file": str(args.file.resolve())})
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"resumed {result['agent']} (generation {result['generation']}, sealed by {result['from']})")
    return 0
