"""Node commands: ``join``, ``status``, ``peers``, ``leave``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from meshagent.config import PROFILES, Config, default_data_dir, load_config
from meshagent.errors import ConfigError, NodeError

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

    p = sub.add_parser("peers", help="list the peers this node knows, with their hardware, link and addresses")
    add_data_dir(p)
    p.add_argument("--wide", action="store_true", help="one line per peer, every column, full peer ids (no wrapping)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_peers)

    p = sub.add_parser("pair", help="pair this device with another of yours (private steps may run on both)")
    add_data_dir(p)
    p.add_argument("code", nargs="?", help="the code shown on the other device (like 417-093218); without it, show a code here")
    p.add_argument("--peer", help="the other device (its name or peer id, printed with the code), when two devices match the code")
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
                "api_url": getattr(api, "url", None) or None}
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            profile = f" (profile {config.node.profile}, emulated)" if config.node.profile else ""
            print(f"meshagent node {node.build_advert_name()} {info['peer_id']}{profile}")
            print("dialable at:")
            for a in info["addrs"]:
                print(f"  {a}")
            if info["api_url"]:
                print(api_banner(info["api_url"], data_dir, config))
            print(f"data dir {data_dir}; stop with Ctrl-C or: meshagent leave --data-dir {data_dir}", flush=True)

    if config.node.profile and config.node.profile not in PROFILES:
        raise ConfigError(f"unknown profile {config.node.profile!r}")
    try:
        trio.run(Node(config, data_dir, on_ready=ready, handle_signals=True).run)
    except OSError as exc:  # an address this machine does not have, a port it may not use
        raise NodeError(f"the node could not start: {exc.strerror or exc} (listening on "
                        f"{', '.join(config.net.listen)}; check --listen and [net] listen)") from exc
    return 0


def api_banner(url: str, data_dir: Path, config: Config) -> str:
    """Where the API and dashboard are; beyond loopback, with the bearer token they need."""
    from meshagent.node.api.auth import TOKEN_FILE, is_loopback

    if is_loopback(config.api.bind):
        return f"OpenAI-compatible API and dashboard: {url}"
    token = config.api.token
    if not token:
        try:
            token = (data_dir / TOKEN_FILE).read_text().strip()
        except OSError:
            token = ""
    where = f" (bearer token in {data_dir / TOKEN_FILE})" if not config.api.token else " (bearer token from [api] token)"
    dashboard = f"{url}/?token={token}" if token else url
    return f"OpenAI-compatible API: {url}{where}; dashboard: {dashboard}"


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
    # Plain prints: a long address may wrap at the terminal's edge, never inside a word.
    print(f"{status['name']} {status['peer_id']}")
    print(f"profile: {status['profile'] or 'real hardware'}   uptime: {status['uptime_s']:.0f} s   "
          f"peers: {status['peers']} (connected {status['connected']})")
    print("dialable at:")
    for a in status["addrs"]:
        print(f"  {a}")
    if status.get("api_url"):
        api = _call(args, "api")
        token = f" (bearer token in {api['token_file']})" if api.get("token_file") else \
            " (bearer token from [api] token)" if api.get("auth") else ""
        print(f"API and dashboard: {status['api_url']}{token}")
    ad = status["advert"]
    print(f"{ad['arch']} {ad['os']}, {ad['cpu_model']}, {ad['cpu_cores']} cores, "
          f"RAM {_gib(ad['ram_free'])}/{_gib(ad['ram_total'])} GiB free")
    if ad["models"]:
        print("models: " + ", ".join(m["name"] for m in ad["models"]))
    return 0


def _strip_p2p(addr: str) -> str:
    """An address without its ``/p2p/<id>`` tail (the table shows the id once)."""
    head, sep, tail = addr.rpartition("/p2p/")
    return head if sep and "/" not in tail else addr


def _link(p: dict[str, Any]) -> str:
    link = p.get("link")
    rtt = "" if p.get("rtt_ms") is None else f" {p['rtt_ms']:.1f} ms"
    return f"{link}{rtt}" if link else "not connected"


def _device(p: dict[str, Any]) -> str:
    return (p["profile"] + " (emulated)") if p["emulated"] else "real"


def _battery(p: dict[str, Any]) -> str:
    if p["battery_percent"] is None:
        return "mains"
    return f"{p['battery_percent']:.0f}%{' on battery' if p['on_battery'] else ' charging'}"


def _accelerators(p: dict[str, Any]) -> list[str]:
    return [a.removesuffix("ExecutionProvider") for a in p["accelerators"]]


def cmd_peers(args: argparse.Namespace) -> int:
    from meshagent.cli.peers import short_id

    peers = _call(args, "peers")["peers"]
    if args.json:
        print(json.dumps(peers))
        return 0
    now = time.time()
    if args.wide:
        table = Table(title=f"{len(peers)} peer(s)")
        for col in ("name", "peer id", "profile", "arch", "cores", "RAM free/total GiB", "accelerators", "battery",
                    "models", "load", "link", "seen", "addresses"):
            table.add_column(col, no_wrap=True)
        for p in peers:
            table.add_row(p["name"], p["peer_id"], _device(p), p["arch"], str(p["cpu_cores"]),
                          f"{_gib(p['ram_free'])}/{_gib(p['ram_total'])}", ", ".join(_accelerators(p)) or "-",
                          _battery(p), ", ".join(m["name"] for m in p["models"]) or "-", str(p["load"]), _link(p),
                          f"{now - p['last_seen']:.0f} s ago", " ".join(_strip_p2p(a) for a in p["addrs"]) or "-")
        Console(width=100_000).print(table, soft_wrap=True)  # one line per peer, however wide
        return 0
    table = Table(title=f"{len(peers)} peer(s)", show_lines=True)
    table.add_column("peer", overflow="fold")
    table.add_column("device", overflow="fold")
    table.add_column("models", overflow="fold")
    table.add_column("link", overflow="fold")
    table.add_column("addresses", overflow="fold", ratio=1)
    for p in peers:
        name = p["name"] if p["name"].endswith(short_id(p["peer_id"])) else f"{p['name']}\n{short_id(p['peer_id'])}"
        device = (f"{_device(p)}\n{p['arch']}, {p['cpu_cores']} cores\nRAM {_gib(p['ram_free'])}/{_gib(p['ram_total'])} GiB"
                  f"\n{_battery(p)}, load {p['load']}" + "".join(f"\n{a}" for a in _accelerators(p)))
        models = "\n".join(m["name"] for m in p["models"]) or "-"
        link = f"{_link(p)}\nseen {now - p['last_seen']:.0f} s ago"
        table.add_row(name, device, models, link, "\n".join(_strip_p2p(a) for a in p["addrs"]) or "-")
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
        from meshagent.cli.peers import resolve_peer

        params["peer"] = resolve_peer(data_dir_of(args), args.peer)["peer_id"]
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
    from meshagent.cli.peers import short_id

    result = _call(args, "auctions")
    if args.json:
        print(json.dumps(result))
        return 0
    names = {p["peer_id"]: p["name"] for p in _call(args, "peers")["peers"]}

    def who(peer: str | None) -> str:
        return "-" if not peer else names.get(peer, short_id(peer))

    table = Table(title="auctions (newest last)", box=box.SIMPLE_HEAD, caption=(
        "a bid: the bidder's estimate × its reliability factor = the time the decision compares; its price"))
    table.add_column("agent", no_wrap=True)
    for col in ("needs", "trigger", "bids", "winner: why"):
        table.add_column(col, overflow="fold")
    for a in result["auctions"]:
        bids = "\n".join(f"{who(b['bidder'])}: {b['total_s']:.2f} s ×{b.get('reliability', 1.0):.2f} = "
                         f"{b['total_s'] * b.get('reliability', 1.0):.2f} s, {b['price']:.4f}" for b in a["bids"]) or "-"
        step = "" if a.get("step") is None else f"\nstep {a['step'] + 1}"
        table.add_row(a["agent_id"][:12] + step, f"{a['requirement'] or 'any LLM'}\n{a['privacy']}", a.get("trigger", ""),
                      bids, f"{who(a['winner'])}: {a['reason']}")
    Console().print(table)
    if result["reputation"]:
        Console().print("reliability factors: " + ", ".join(f"{who(p)} {f:.2f}" for p, f in result["reputation"].items()))
    return 0
