"""The ``mesh`` host ABI: the functions declared in ``meshagent/agents/meshagent.h``.

Calls that ask the world (the LLM, tools, embeddings, a child's output) are
answered from the journal on replay. A call whose ``out_cap`` is too small
returns ``-(bytes needed)`` and keeps the answer pending: the next call with
the same arguments gets it without asking the world again.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from meshagent.errors import AgentError, CheckpointNotFound, JournalError
from meshagent.protocol import codec
from meshagent.runtime.costs import FUEL_PER_EMBED, FUEL_PER_EMBEDDED_BYTE
from meshagent.runtime.journal import digest
from meshagent.runtime.services import ReplayAware, parse_llm_options
from meshagent.runtime.tools.spec import ToolResult, error_result

if TYPE_CHECKING:
    from meshagent.runtime.sandbox import HostCalls

__all__ = ["MODULE", "mesh_functions", "MESH_NAMES", "MAX_FORK", "MAX_ANSWER", "Rollback"]

log = logging.getLogger(__name__)

MODULE: Final = "mesh"
MAX_FORK: Final = 64
MAX_ANSWER: Final = 16 << 20
MAX_PROMPT: Final = 16 << 20
LOG_LEVELS: Final = {0: "debug", 1: "info", 2: "warning", 3: "error"}


class Rollback(Exception):
    """Unwinds the guest: execution continues from checkpoint ``label`` at journal ``position``."""

    def __init__(self, label: str, position: int) -> None:
        super().__init__(f"rollback to {label!r}")
        self.label = label
        self.position = position


def _u(x: int) -> int:
    return x & 0xFFFFFFFF


def mesh_functions(h: HostCalls) -> dict[str, tuple[str, Callable[..., int | None]]]:
    """Name → (signature, implementation) for the ``mesh`` imports, bound to one agent."""

    def answered(name: str, inputs: tuple[bytes | int | str, ...], out: int, cap: int, unit: int,
                 produce: Callable[[], bytes]) -> int:
        m = h.mem()
        if cap < 0:
            m.check(_u(out), cap, "output buffer")
        m.check(_u(out), cap * unit, "output buffer")
        dig = digest(name, *inputs)

        def live() -> tuple[int, bytes | None]:
            pending = h.state.pending.get(name)
            answer = pending[1] if pending is not None and pending[0] == dig else produce()
            if len(answer) > MAX_ANSWER:
                raise AgentError(f"{name}: the answer of {len(answer)} bytes is larger than the limit of {MAX_ANSWER}")
            count = len(answer) // unit
            return (count if count <= cap else -count), answer

        ret, data = h.call_digest(name, dig, live, nondet=True)
        answer = data or b""
        if ret >= 0:
            m.write(_u(out), answer)
            h.state.pending.pop(name, None)
        else:
            h.state.pending[name] = (dig, answer)
        return ret

    def llm(prompt: int, plen: int, out: int, cap: int) -> int:
        m = h.mem()
        if plen < 0 or plen > MAX_PROMPT:
            m.check(_u(prompt), plen if plen < 0 else MAX_PROMPT + 1, "prompt")
        text = m.read(_u(prompt), plen, "prompt")
        options = h.state.llm_options

        def produce() -> bytes:
            return h.services.llm(h.agent_id, text.decode("utf-8", "replace"), options).encode()

        ret = answered("llm", (text, *[str(x) for x in options.to_wire()]), out, cap, 1, produce)
        if ret >= 0 and h.from_journal and isinstance(h.services, ReplayAware):
            answer = h.mem().read(_u(out), ret)
            h.services.llm_replayed(h.agent_id, text.decode("utf-8", "replace"), answer.decode("utf-8", "replace"), options)
        return ret

    def llm_options(ptr: int, length: int) -> int:
        m = h.mem()
        raw = m.read(_u(ptr), length, "options")

        def live() -> tuple[int, bytes | None]:
            parsed = parse_llm_options(raw.decode("utf-8", "replace"), h.state.llm_options)
            if parsed is None:
                return -1, None
            h.state.llm_options = parsed
            return 0, None

        return h.call("llm_options", (raw,), live)[0]

    def tool(name: int, args: int, alen: int, out: int, cap: int) -> int:
        """Journaled as [answer, writes]: replay re-applies the writes and never runs the tool."""
        m = h.mem()
        tool_name = m.cstring(_u(name), "tool name").decode("utf-8", "replace")
        raw = m.read(_u(args), alen, "tool arguments")
        if cap < 0:
            m.check(_u(out), cap, "output buffer")
        m.check(_u(out), cap, "output buffer")
        dig = digest("tool", tool_name, raw)

        def live() -> tuple[int, bytes | None]:
            pending = h.state.pending.get("tool")
            if pending is not None and pending[0] == dig:
                result = ToolResult(pending[1])  # its writes were applied with the first answer
            else:
                meter = h.meter()
                result = h.tools.call(tool_name, raw, h.fs, meter)
                h.charge(meter.used, f"tool {tool_name}")
            if len(result.answer) > MAX_ANSWER:
                result = error_result(f"{tool_name}: the answer of {len(result.answer)} bytes is larger than the limit of {MAX_ANSWER}")
            count = len(result.answer)
            return (count if count <= cap else -count), result.encode()

        ret, data = h.call_digest("tool", dig, live, nondet=True)
        result = ToolResult.decode(data or b"")
        fs = h.fs
        for path, content in result.writes:
            try:
                if content is None:
                    fs.delete(path)
                else:
                    fs.put(path, content)
            except JournalError as exc:
                raise JournalError(f"the journaled tool call {tool_name!r} wrote an invalid file: {exc}") from exc
        if ret >= 0:
            m.write(_u(out), result.answer)
            h.state.pending.pop("tool", None)
        else:
            h.state.pending["tool"] = (dig, result.answer)
        return ret

    def embed(text: int, tlen: int, out: int, cap: int) -> int:
        m = h.mem()
        raw = m.read(_u(text), tlen, "text")

        def produce() -> bytes:
            h.charge(FUEL_PER_EMBED + len(raw) * FUEL_PER_EMBEDDED_BYTE, "an embedding")
            vector = h.services.embed(h.agent_id, raw.decode("utf-8", "replace"))
            return struct.pack(f"<{len(vector)}f", *vector)

        return answered("embed", (raw,), out, cap, 4, produce)

    def checkpoint(label: int) -> int:
        name = h.mem().cstring(_u(label), "checkpoint label")
        text = name.decode("utf-8", "replace")
        return h.call("checkpoint", (name,), lambda: (h.rollbacks.get(text, 0), name), nondet=True)[0]

    def rollback(label: int) -> None:
        name = h.mem().cstring(_u(label), "checkpoint label")
        text = name.decode("utf-8", "replace")
        for index in range(h.position - 1, -1, -1):
            entry = h.journal[index]
            if entry.name == "checkpoint" and entry.data == name:
                raise Rollback(text, index)
        if text in h.labels and h.labels[text] <= h.position:
            raise Rollback(text, h.labels[text])
        raise CheckpointNotFound(
            f"mesh_rollback({text!r}): the agent never reached mesh_checkpoint({text!r}) on this path; "
            "call mesh_checkpoint with that label first"
        )

    def fork(n: int) -> int:
        if not 1 <= n <= MAX_FORK:
            return h.call("fork", (n,), lambda: (-2, None))[0]
        dig = digest("fork", n)

        def live() -> tuple[int, bytes | None]:
            children = h.spawn_children(dig, n)
            return -1, codec.encode(children)

        ret, data = h.call_digest("fork", dig, live, nondet=True)
        children = codec.decode(data or b"\x80", max_depth=2)
        if ret == -1:
            if not isinstance(children, list) or not all(isinstance(c, str) for c in children):
                raise AgentError("the journal's fork entry does not list child ids")
            h.state.fork_children = list(children)  # type: ignore[arg-type]
        return ret

    def join(i: int, out: int, cap: int) -> int:
        children = h.state.fork_children
        if not 0 <= i < len(children):
            raise AgentError(
                f"mesh_join({i}): the agent's latest mesh_fork made {len(children)} children; "
                "join an index between 0 and n-1 after forking"
            )
        child = children[i]
        return answered("join", (child,), out, cap, 1, lambda: h.join_child(child))

    def log_(level: int, msg: int, length: int) -> None:
        text = h.mem().read(_u(msg), length, "log message").decode("utf-8", "replace")

        def live() -> tuple[int, bytes | None]:
            h.agent_log(LOG_LEVELS.get(level, "info"), text)
            return 0, None

        h.call("log", (level, text), live)

    return {
        "llm": ("iiii>i", llm),
        "llm_options": ("ii>i", llm_options),
        "tool": ("iiiii>i", tool),
        "embed": ("iiii>i", embed),
        "checkpoint": ("i>i", checkpoint),
        "rollback": ("i>", rollback),
        "fork": ("i>i", fork),
        "join": ("iii>i", join),
        "log": ("iii>", log_),
    }


MESH_NAMES: Final = frozenset((MODULE, n) for n in ("llm", "llm_options", "tool", "embed", "checkpoint", "rollback", "fork", "join", "log"))
