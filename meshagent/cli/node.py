"""Node commands: ``join``, ``status``, ``peers``, ``leave``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from meshagent.config import PROFILES, Config, default_data_dir, load_config
from meshagent.errors import ConfigError

__all__ = ["register", "data_dir_of", "add_data_dir"]


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="the node's data dir (default: per user; $MESHAGENT_HOME)")


def data_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if getattr(args, "data_dir", None) else default_data_dir()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("join", help="run a node in the foreground and join the mesh")
    add_data_dir(p)
    p.add_argument("--config", type=Path, help="TOML config file (default: <data dir>/config.toml if present)")
    p.add_argument("--profile", choices=PROFILES, help="emulate a device class in the advert")
    p.add_argument("--listen", action="append", metavar="MULTIADDR", help="listen address (repeatable)")
    p.add_argument("--bootstrap", action="append", metavar="MULTIADDR", default=[], help="peer to dial at start (repeatable)")
    p.add_argument("--name", help="node name shown to peers")
    p.add_argument("--interface", help="restrict mDNS and advertised addresses to this interface")
    p.add_argument("--no-mdns", action="store_true", help="do not use mDNS (bootstrap and peer exchange only)")
    p.add_argument("--price", type=float, help="price per 1,000 generated tokens")
    p.add_argument("--json", action="store_true", help="print the ready line as JSON")
    p.set_defaults(func=cmd_join)

    p = sub.add_parser("status", help="show this node")
    add_data_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("peers", help="list the peers this node knows, with their hardware")
    add_data_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_peers)

    p = sub.add_parser("pair", help="pair this device with another of yours (private steps may run on both)")
    add_data_dir(p)
    p.add_argument("code", nargs="?", help="the code shown on the other device (like 417-093218); without it, show a code here")
    p.add_argument("--peer", help="the other device's peer id (printed with the code), when two devices match the code")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pair)

    p = sub.add_parser("trusted", help="list the devices paired with this one")
    add_data_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trusted)

    p = sub.add_parser("auctions", help="placement decisions this node made: bids, winner and why")
    add_data_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_auctions)

    p = sub.add_parser("emulate", help="pretend this device is hot or on a low battery (to try the triggers)")
    add_data_dir(p)
    p.add_argument("--hot", action=argparse.BooleanOptionalAction, default=None, help="emulate a hot device (or not)")
    p.add_argument("--battery", type=float, metavar="PERCENT", help="emulate running on a battery at PERCENT")
    p.add_argument("--clear", action="store_true", help="back to the device's real state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_emulate)

    p = sub.add_parser("leave", help="stop the node cleanly")
    add_data_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_leave)


def _config_for(args: argparse.Namespace, data_dir: Path) -> Config:
    path = args.config
    if path is None and (data_dir / "config.toml").exists():
        path = data_dir / "config.toml"
    config = load_config(path)
    net: dict[str, Any] = {
        "listen": tuple(args.listen) if args.listen else None,
        "bootstrap": tuple(config.net.bootstrap) + tuple(args.bootstrap),
        "interface": args.interface,
    }
    if args.no_mdns:
        net["mdns"] = False
    node = {"profile": args.profile, "name": args.name, "price_per_1k_tokens": args.price}
    return config.with_overrides(net=net, node=node)


def cmd_join(args: argparse.Namespace) -> int:
    import trio

    from meshagent.node.node import Node

    data_dir = data_dir_of(args)
    config = _config_for(args, data_dir)

    def ready(node: Node) -> None:
        assert node.identity and node.host
        api = getattr(node, "api", None)
        info = {"peer_id": node.identity.peer_id, "addrs": list(node.host.p2p_addrs), "data_dir": str(data_dir),
                "api_url": getattr(api, "url", None)}
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            print(f"meshagent node {info['peer_id']}" + (f" (profile {config.node.profile}, emulated)" if config.node.profile else ""))
            print("dialable at:")
            for a in info["addrs"]:
                print(f"  {a}")
            if info["api_url"]:
                print(f"OpenAI-compatible API and dashboard: {info['api_url']}")
            print(f"data dir {data_dir}; stop with Ctrl-C or: meshagent leave --data-dir {data_dir}", flush=True)

    if config.node.profile and config.node.profile not in PROFILES:
        raise ConfigError(f"unknown profile {config.node.profile!r}")
    trio.run(Node(config, data_dir, on_ready=ready, handle_signals=True).run)
    return 0


def _call(args: argparse.Namespace, op: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    from meshagent.node.control import call

    return call(data_dir_of(args), op, params)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f}"


def cmd_status(args: argparse.Namespace) -> int:
    status = _call(args, "status")
    if args.json:
        print(json.dumps(status))
        return 0
    console = Console()
    console.print(f"[bold]{status['name']}[/] {status['peer_id']}")
    console.print(f"profile: {status['profile'] or 'real hardware'}   uptime: {status['uptime_s']:.0f} s   "
                  f"peers: {status['peers']} (connected {status['connected']})")
    for a in status["addrs"]:
        console.print(f"  {a}")
    if status.get("api_url"):
        console.print(f"API and dashboard: {status['api_url']}")
    ad = status["advert"]
    console.print(f"{ad['arch']} {ad['os']}, {ad['cpu_model']}, {ad['cpu_cores']} cores, "
                  f"RAM {_gib(ad['ram_free'])}/{_gib(ad['ram_total'])} GiB free")
    if ad["models"]:
        console.print("models: " + ", ".join(m["name"] for m in ad["models"]))
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    peers = _call(args, "peers")["peers"]
    if args.json:
        print(json.dumps(peers))
        return 0
    table = Table(title=f"{len(peers)} peer(s)")
    for col in ("name", "peer id", "profile", "arch", "cores", "RAM free/total GiB", "accelerators", "battery", "models", "load", "rtt ms", "seen"):
        table.add_column(col)
    now = time.time()
    for p in peers:
        battery = "-" if p["battery_percent"] is None else f"{p['battery_percent']:.0f}%{' (on battery)' if p['on_battery'] else ''}"
        table.add_row(
            p["name"],
            p["peer_id"][:8] + "…" + p["peer_id"][-6:],
            (p["profile"] + " (emulated)") if p["emulated"] else "real",
            p["arch"],
            str(p["cpu_cores"]),
            f"{_gib(p['ram_free'])}/{_gib(p['ram_total'])}",
            "\n".join(p["accelerators"]) or "-",
            battery,
            "\n".join(m["name"] for m in p["models"]) or "-",
            str(p["load"]),
            "-" if p["rtt_ms"] is None else f"{p['rtt_ms']:.1f}",
            f"{now - p['last_seen']:.0f} s ago",
        )
    Console().print(table)
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"hot": None, "battery_percent": None} if args.clear else {}
    if args.hot is not None:
        params["hot"] = args.hot
    if args.battery is not None:
        params["battery_percent"] = args.battery
    result = _call(args, "emulate", params)
    if args.json:
        print(json.dumps(result))
    else:
        battery = result["battery_percent"]
        print(f"hot: {result['hot']}; battery: {'none' if battery is None else f'{battery:.0f}%'}"
              f" (emulated: {', '.join(sorted(result['emulated'])) or 'nothing'})")
    return 0


def cmd_leave(args: argparse.Namespace) -> int:
    result = _call(args, "leave")
    if args.json:
        print(json.dumps(result))
    else:
        print("node is leaving", file=sys.stderr)
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    if args.code is None:
        result = _call(args, "pair_show")
        if args.json:
            print(json.dumps(result))
        else:
            print(f"pairing code: {result['code']}  (valid {result['expires_in_s']:.0f} s, three tries)")
            print("on your other device run:  meshagent pair " + result["code"])
            print(f"this device: {result['peer_id']}")
        return 0
    params: dict[str, Any] = {"code": args.code}
    if args.peer:
        params["peer"] = args.peer
    result = _call(args, "pair_join", params)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"paired with {result['name']} ({result['peer_id']})")
    return 0


def cmd_trusted(args: argparse.Namespace) -> int:
    devices = _call(args, "trusted")["devices"]
    if args.json:
        print(json.dumps(devices))
        return 0
    table = Table(title="paired devices")
    table.add_column("name")
    table.add_column("peer id")
    table.add_column("paired")
    for d in devices:
        table.add_row(d["name"], d["peer_id"], time.strftime("%Y-%m-%d %H:%M", time.localtime(d["paired_at"])))
    Console().print(table)
    return 0


def cmd_auctions(args: argparse.Namespace) -> int:
    result = _call(args, "auctions")
    if args.json:
        print(json.dumps(result))
        return 0
    table = Table(title="auctions (newest last)")
    for col in ("agent", "step", "needs", "privacy", "trigger", "bids (peer: s, price)", "winner", "why", "ms"):
        table.add_column(col)
    for a in result["auctions"]:
        bids = "\n".join(f"{b['bidder'][-6:]}: {b['total_s']:.2f}, {b['price']:.4f}" for b in a["bids"]) or "-"
        table.add_row(a["agent_id"][:8], "" if a.get("step") is None else str(a["step"] + 1), a["requirement"] or "any",
                      a["privacy"], a.get("trigger", ""), bids, (a["winner"] or "-")[-6:], a["reason"], f"{a['decision_ms']:.0f}")
    Console().print(table)
    if result["reputation"]:
        Console().print("reliability factors: " + ", ".join(f"{p[-6:]} {f:.2f}" for p, f in result["reputation"].items()))
    return 0
