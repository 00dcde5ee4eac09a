"""Agent subcommands: build, run, result, resume, agents, logs, checkpoint, fork, rollback, kill."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from meshagent.cli.whereabouts import list_agents, show_logs
from meshagent.errors import ConfigError, ControlError, ModuleError

__all__ = ["register"]


def _data_dir(args: argparse.Namespace) -> Path:
    from meshagent.config import default_data_dir

    return Path(args.data_dir) if getattr(args, "data_dir", None) else default_data_dir()


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="the node's data dir (default: per user; $MESHAGENT_HOME)")


def _add_services(p: argparse.ArgumentParser) -> None:
    p.add_argument("--services", metavar="MODULE:ATTR",
                   help="host services for --local runs: an object or factory implementing HostServices "
                        "(and optionally World), e.g. tests.runtime.fakes:scripted_services")
    p.add_argument("--model", type=Path, help="a GGUF model for mesh_llm in --local runs (llama.cpp)")
    p.add_argument("--model-tag", action="append", default=[], metavar="TAG",
                   help="a tag of --model, e.g. size=large or a model name the agent asks for (repeatable); "
                        "without a size= tag its size comes from its parameter count")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build an agent: C sources into a wasm32-wasi module, or one Python file into a component",
                       description="Build an agent. C: one or more .c files written against meshagent.h, compiled with "
                                   "zig into a wasm32-wasi module. Python: one .py file (import meshagent_agent), "
                                   "built with componentize-py into a WebAssembly component with CPython inside, "
                                   "as untrusted code (in bubblewrap when installed). A NAME.tools.toml beside "
                                   "NAME.c or NAME.py declares the agent's WASI tools.")
    p.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="C files (.c), or one Python file (.py)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the module or component to write")
    p.add_argument("--reactor", action="store_true", help="build a reactor (entry points called by the node) instead of a command")
    p.add_argument("--tools", type=Path, metavar="TOOLS.toml",
                   help="declare the agent's WASI tools (embedded in the module as its manifest)")
    p.set_defaults(func=_build)

    p = sub.add_parser("run", help="run an agent and wait for it and its forked children",
                       usage="meshagent run AGENT.wasm [--local] [--json] [--verify-replay] [--dir PATH] [-- ARGS...]")
    _run_options(p)
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="AGENT.wasm [-- ARGS...]")
    p.set_defaults(func=_run)

    p = sub.add_parser("result", help="print how an agent of this node ended, wherever it ran (with --wait: once it ends)")
    p.add_argument("agent")
    p.add_argument("--wait", action="store_true", help="wait until the agent ends and its result reaches this node")
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)
    p.set_defaults(func=_result)

    p = sub.add_parser("resume", help="resume agents from a snapshot file written by run --snapshot-at (in-process)")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--verify-replay", action="store_true")
    _add_services(p)
    p.set_defaults(func=_resume)

    p = sub.add_parser("agents", help="list the agents on this node")
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)
    p.set_defaults(func=list_agents)

    p = sub.add_parser("logs", help="show an agent's output")
    p.add_argument("agent")
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)
    p.set_defaults(func=show_logs)

    p = sub.add_parser("checkpoint", help="label an agent's current position")
    p.add_argument("agent")
    p.add_argument("--label")
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)
    p.set_defaults(func=_simple("checkpoint", lambda a: {"agent_id": a.agent, "label": a.label}))

    p = sub.add_parser("fork", help="clone an agent into N children that continue from its last host call")
    p.add_argument("agent")
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)
    p.set_defaults(func=_simple("fork", lambda a: {"agent_id": a.agent, "n": a.n}))

    p = sub.add_parser("rollback", help="roll an agent back to a checkpoint label")
    p.add_argument("agent")
    p.add_argument("--to", required=True, metavar="LABEL")
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)
    p.set_defaults(func=_simple("rollback", lambda a: {"agent_id": a.agent, "label": a.to}))

    p = sub.add_parser("kill", help="stop an agent at its next host call")
    p.add_argument("agent")
    p.add_argument("--json", action="store_true")
    _add_data_dir(p)
    p.set_defaults(func=_simple("kill", lambda a: {"agent_id": a.agent}))


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--local", action="store_true", help="run in this process; no node needed")
    p.add_argument("--json", action="store_true", help="one JSON object per finished agent, one per line")
    p.add_argument("--verify-replay", action="store_true",
                   help="after every host call, snapshot, restore into a fresh sandbox and continue from the copy")
    p.add_argument("--dir", type=Path, help="directory the agent sees as its preopened '/' (its writes stay in the agent)")
    p.add_argument("--out-dir", type=Path, metavar="DIR",
                   help="--local: write the files the agent wrote (e.g. REVIEW.md) into DIR when it ends")
    p.add_argument("--out-dotfiles", action="store_true",
                   help="with --out-dir: also write dot-files and files in dot-directories (such as .git/config)")
    p.add_argument("--tool", action="append", default=[], type=Path, metavar="TOOL.wasm",
                   help="a WASI tool module the agent's manifest declares (shipped tools are found without)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment variable for the agent")
    p.add_argument("--snapshot-at", nargs=2, metavar=("N", "FILE"),
                   help="(--local) stop the agent and its children before its host call N (0: the first) "
                        "and write them to FILE, for `meshagent resume FILE`")
    p.add_argument("--privacy", choices=("private", "lan", "any"), default="private",
                   help="where the agent may go: only your paired devices (default), peers on this link, or any peer")
    p.add_argument("--policy", choices=("latency", "cost", "balanced"), default="latency",
                   help="what its auctions minimise")
    _add_services(p)
    _add_data_dir(p)


def _parse_run(args: argparse.Namespace) -> argparse.Namespace:
    """argparse cannot mix options after a positional with ``--``: parse the rest again."""
    rest = list(args.rest)
    tail: list[str] = []
    if "--" in rest:
        cut = rest.index("--")
        rest, tail = rest[:cut], rest[cut + 1:]
    second = argparse.ArgumentParser(prog="meshagent run")
    _run_options(second)
    second.add_argument("module", type=Path, metavar="AGENT.wasm")
    second.add_argument("args", nargs="*")
    for action in second._actions:
        if action.dest in vars(args) and action.dest not in ("help", "module", "args"):
            action.default = getattr(args, action.dest)
    ns = second.parse_intermixed_args(rest)
    ns.args = [*ns.args, *tail]
    ns.func = args.func
    return ns


def _build(args: argparse.Namespace) -> int:
    from meshagent.runtime.build import build_agent

    odd = [str(src) for src in args.sources if src.suffix not in (".c", ".py")]
    if odd:
        raise ConfigError(f"meshagent build takes C sources (.c) or one Python file (.py), not {', '.join(odd)}")
    if args.sources[0].suffix == ".py":
        from meshagent.sdk.build import build_python_agent, build_sandbox

        if len(args.sources) != 1 or args.reactor or args.tools:
            raise ConfigError("a Python agent is built from one .py file (no --reactor or --tools yet)")
        out = build_python_agent(args.sources[0], args.output)
        print(f"built {out} ({out.stat().st_size} bytes, a component with CPython; {build_sandbox().describe()})")
        return 0

    out = build_agent(list(args.sources), args.output, reactor=args.reactor, tools=args.tools)
    from meshagent.runtime.tools.runtime import manifest_of

    wasm = out.read_bytes()
    for spec in manifest_of(hashlib.sha256(wasm).hexdigest(), wasm).tools:
        print(f"tool {spec.name}: {spec.sha256[:16]}… memory {spec.memory_bytes >> 20} MiB, fuel {spec.fuel}"
              f"{', private' if spec.private else ''}")
    print(f"built {out} ({out.stat().st_size} bytes)")
    return 0


def _load_services(args: argparse.Namespace, command: str, elsewhere: str = "") -> Any:
    """Host services for ``--local`` and ``resume``; ``command`` is what to repeat with ``--model``,
    ``elsewhere`` another way to give the agent a model."""
    if args.services and args.model:
        raise ConfigError("give either --services or --model, not both")
    if args.model_tag and not args.model:
        raise ConfigError("--model-tag describes --model: give the model too")
    if args.services:
        module_name, _, attr = args.services.partition(":")
        if not attr:
            raise ConfigError("--services must look like MODULE:ATTR")
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--services {args.services}: {exc}") from exc
        return target() if callable(target) else target
    from meshagent.runtime.local import LocalModel, NoModel

    if args.model:
        from meshagent.inference.gguf_info import check_gguf
        from meshagent.inference.hashing import sha256_file
        from meshagent.inference.llama_engine import LlamaEngine

        check_gguf(args.model)
        engine = LlamaEngine(args.model, sha256=sha256_file(args.model), tags=tuple(args.model_tag))
        return LocalModel(engine, label=str(args.model))
    return NoModel(command, elsewhere)


def _module_cache_dir() -> Path:
    from meshagent.config import user_cache_dir

    return user_cache_dir() / "modules"


def _env(pairs: list[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--env {pair!r}: expected NAME=VALUE")
        out.append((name, value))
    return out


def outcome_line(outcome: Any) -> str | None:
    """The one line that says why an agent did not end normally (``None`` when it exited)."""
    why = outcome.error_message
    match outcome.status:
        case "exited":
            return None
        case "failed":
            return f"meshagent: agent {outcome.agent_id} failed: {why or 'no reason was recorded'}"
        case "suspended":
            return (f"meshagent: agent {outcome.agent_id} is suspended after {outcome.host_calls} host calls"
                    + (f": {why}" if why else ""))
        case "killed":
            return f"meshagent: agent {outcome.agent_id} was killed after {outcome.host_calls} host calls"
        case status:
            return f"meshagent: agent {outcome.agent_id} ended {status}" + (f": {why}" if why else "")


def _print_outcomes(outcomes: list[Any], as_json: bool, lines: dict[str, str] | None = None) -> int:
    """Print the agents' output (or JSON) and a line for each that did not exit; the root decides the status:
    its own exit code when it exited, 1 otherwise. ``lines`` replaces the line of some agents (a hint added)."""
    root = outcomes[0]
    if as_json:
        for outcome in outcomes:
            print(json.dumps(outcome.to_json()), flush=True)
    else:
        sys.stdout.write(root.stdout.decode("utf-8", "replace"))
        sys.stdout.flush()
        sys.stderr.write(root.stderr.decode("utf-8", "replace"))
    for outcome in outcomes:
        line = (lines or {}).get(outcome.agent_id) or outcome_line(outcome)
        if line:
            print(line, file=sys.stderr)
    if root.status != "exited":
        return 1
    return root.exit_code if isinstance(root.exit_code, int) and 0 <= root.exit_code < 256 else 1


def _run(args: argparse.Namespace) -> int:
    from meshagent.runtime.vfs import VirtualFs

    args = _parse_run(args)
    try:
        wasm = args.module.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.module}: {exc.strerror}") from exc
    if not wasm.startswith(b"\0asm"):
        raise ModuleError(f"{args.module} is not a WebAssembly module; build one with `meshagent build`")
    agent_args = [args.module.name, *args.args]
    if not args.local:
        if (args.snapshot_at or args.verify_replay or args.services or args.model or args.model_tag or args.out_dir
                or args.out_dotfiles):
            raise ConfigError("--snapshot-at, --verify-replay, --services, --model, --model-tag and --out-dir need --local "
                              "(a node uses the models of its config)")
        from meshagent.node.control import call_streaming

        moved: dict[str, str] = {}

        def on_event(event: dict[str, Any]) -> None:
            if isinstance(event.get("moved"), str):
                moved[event["moved"]] = str(event.get("to"))

        data_dir = _data_dir(args)
        try:
            result = call_streaming(data_dir, "run", {
                "module_path": str(args.module.resolve()),
                "args": agent_args,
                "env": dict(_env(args.env)),
                "dir": str(args.dir.resolve()) if args.dir else None,
                "tools": [str(t.resolve()) for t in args.tool],
                "privacy": args.privacy,
                "policy": args.policy,
            }, on_event=on_event, timeout=None)
        except ControlError as exc:
            if not moved:
                raise
            agent, to = next(reversed(moved.items()))
            where = f" --data-dir {args.data_dir}" if args.data_dir else ""
            raise ControlError(f"agent {agent} moved to {to} and this node stopped before it ended; its result "
                               f"comes back to this node: start the node again and wait with: "
                               f"meshagent result {agent} --wait{where}") from exc
        outcomes = [_Remote(o) for o in result["agents"]]
        from meshagent.cli.explain import explain_failures

        return _print_outcomes(outcomes, args.json, explain_failures(data_dir, outcomes))

    from meshagent.runtime.local import run_local

    if args.out_dotfiles and args.out_dir is None:
        raise ConfigError("--out-dotfiles goes with --out-dir DIR")
    snapshot_at = snapshot_path = None
    if args.snapshot_at:
        try:
            snapshot_at = int(args.snapshot_at[0])
        except ValueError as exc:
            raise ConfigError("--snapshot-at N FILE: N must be an integer") from exc
        if snapshot_at < 0:
            raise ConfigError("--snapshot-at N FILE: N counts host calls from 0")
        snapshot_path = Path(args.snapshot_at[1])
    result = run_local(  # C agents and Python agents (components) alike
        wasm,
        args=agent_args,
        env=_env(args.env),
        vfs=VirtualFs.from_directory(args.dir) if args.dir else None,
        services=_load_services(args, f"meshagent run {args.module} --local",
                               "run it on a node that holds one (without --local)"),
        verify_replay=args.verify_replay,
        snapshot_at=snapshot_at,
        snapshot_path=snapshot_path,
        cache_dir=_module_cache_dir(),
        tools=[t.read_bytes() for t in args.tool],
    )
    if snapshot_path is not None and result.snapshot_written:
        print(f"meshagent: wrote a snapshot of {len(result.outcomes)} agent(s) to {snapshot_path}", file=sys.stderr)
        return 0
    if args.out_dir is not None:
        _write_files(args.out_dir, result.written, dotfiles=args.out_dotfiles)
    status = _print_outcomes(result.outcomes, args.json)
    if snapshot_path is not None:
        calls = result.outcomes[0].host_calls
        print(f"meshagent: no snapshot written: the agent ended after {calls} host calls, so --snapshot-at "
              f"takes N from 0 to {max(calls - 1, 0)}", file=sys.stderr)
        return 1
    return status


def _write_files(out_dir: Path, written: dict[str, bytes | None], *, dotfiles: bool) -> None:
    """The agent's writes (relative paths) under ``out_dir``; deletions are not applied.

    The agent chose these paths: each is written inside ``out_dir`` without
    following symlinks, and dot-files or dot-directories (``.git/config``,
    ``.bashrc``) only when the user passed ``--out-dotfiles``."""
    from meshagent.runtime.hostfiles import write_beneath

    for rel, data in sorted(written.items()):
        if data is None:
            continue
        shown = rel if rel.isprintable() else repr(rel)  # the agent chose it: no terminal escapes
        if not dotfiles and any(part.startswith(".") for part in rel.split("/")):
            print(f"meshagent: not writing {shown}: a dot-file (pass --out-dotfiles to write those too)", file=sys.stderr)
            continue
        try:
            write_beneath(out_dir, rel, data)
        except ConfigError as exc:
            print(f"meshagent: {exc}", file=sys.stderr)
            continue
        print(f"meshagent: wrote {out_dir / shown}", file=sys.stderr)


def _resume(args: argparse.Namespace) -> int:
    from meshagent.runtime.local import resume_local

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from exc
    result = resume_local(data, services=_load_services(args, f"meshagent resume {args.file}"), verify_replay=args.verify_replay,
                          cache_dir=_module_cache_dir())
    return _print_outcomes(result.outcomes, args.json)


class _Remote:
    """An outcome as the node's control API returns it (JSON), shaped like Outcome for printing."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw
        self.agent_id = raw.get("agent_id")
        self.status = raw.get("status")
        self.exit_code = raw.get("exit_code")
        self.stdout = str(raw.get("stdout", "")).encode()
        self.stderr = str(raw.get("stderr", "")).encode()
        self.error_message = raw.get("error")

    def to_json(self) -> dict[str, Any]:
        return self._raw


def _result(args: argparse.Namespace) -> int:
    from meshagent.node.control import call

    found = call(_data_dir(args), "result", {"agent_id": args.agent, "wait": args.wait}, timeout=None if args.wait else 60.0)
    return _print_outcomes([_Remote(found)], args.json)


def _simple(op: str, params: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        from meshagent.node.control import call

        result = call(_data_dir(args), op, params(args))
        if getattr(args, "json", False):
            print(json.dumps(result))
        elif op == "logs":
            sys.stdout.write(result.get("stdout", ""))
            sys.stderr.write(result.get("stderr", ""))
        else:
            print(" ".join(f"{k}={v}" for k, v in result.items()))
        return 0

    return handler


