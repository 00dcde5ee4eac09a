"""Where log records go: meshagent's own from WARNING (or as ``-v``/``MESHAGENT_LOG`` say), libraries' only with
``MESHAGENT_LOG``, at WARNING and above, formatted like ours and rate limited; and no empty reasons."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from meshagent.cli.logconfig import LogSettings, MeshLogHandler, configured_logging, parse_log_env
from meshagent.errors import ConfigError
from tests.conftest import ROOT


def _record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_parse_log_env() -> None:
    assert parse_log_env(None) == LogSettings(logging.WARNING, libraries=False)
    assert parse_log_env("", verbose=1) == LogSettings(logging.INFO, libraries=False)
    assert parse_log_env("Info") == LogSettings(logging.INFO, libraries=True)
    assert parse_log_env("error", verbose=2) == LogSettings(logging.DEBUG, libraries=True)  # the more verbose wins
    with pytest.raises(ConfigError, match=r"^MESHAGENT_LOG=loud: unknown level; use one of debug, info, warning, error$"):
        parse_log_env("loud")


def test_library_records_are_gated_and_rate_limited(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    quiet = MeshLogHandler(LogSettings(logging.WARNING, libraries=False), clock=lambda: now[0])
    quiet.handle(_record("libp2p.pubsub.gossipsub", logging.WARNING, "Rate limit exceeded for peer %s", "p"))
    quiet.handle(_record("meshagent.node.mesh", logging.INFO, "below the threshold"))
    quiet.handle(_record("meshagent.node.mesh", logging.WARNING, "ours %d", 1))
    assert capsys.readouterr().err.splitlines()[-1].endswith(" WARNING meshagent.node.mesh: ours 1")

    loud = MeshLogHandler(LogSettings(logging.INFO, libraries=True), clock=lambda: now[0], burst=3, window_s=10.0)
    for i in range(10):
        loud.handle(_record("libp2p.pubsub.gossipsub", logging.WARNING, "Rate limit exceeded for peer %s", f"p{i}"))
    loud.handle(_record("zeroconf", logging.INFO, "library info stays out"))
    loud.handle(_record("hypercorn.error", logging.ERROR, "another template, its own budget"))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "Rate limit exceeded for peer p0", "Rate limit exceeded for peer p1", "Rate limit exceeded for peer p2",
        "another template, its own budget"]
    assert " WARNING libp2p.pubsub.gossipsub: " in lines[0]  # meshagent's format
    now[0] = 10.0
    loud.handle(_record("libp2p.pubsub.gossipsub", logging.WARNING, "Rate limit exceeded for peer %s", "p10"))
    assert capsys.readouterr().err.strip().endswith(
        "Rate limit exceeded for peer p10 [7 more like this in the last 10 s not shown]")


def test_configured_logging_is_undone(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.lastResort)
    with configured_logging(LogSettings(logging.WARNING, libraries=False)) as handler:
        assert handler in root.handlers and logging.lastResort is handler
    assert (list(root.handlers), root.level, logging.lastResort) == before


PROBE = textwrap.dedent("""
    import logging, os
    import libp2p  # detaches its loggers from the root, as in a node
    from meshagent.cli.logconfig import configured_logging, parse_log_env
    with configured_logging(parse_log_env(os.environ.get("MESHAGENT_LOG"))):
        for i in range(100):
            logging.getLogger("libp2p.pubsub.gossipsub").warning(
                "Rate limit exceeded for peer %s on topic %s", f"peer{i}", "meshagent/adverts/1")
        logging.getLogger("meshagent.node.mesh").warning("ours")
""")


@pytest.mark.parametrize(("env", "expected"), [({}, 0), ({"MESHAGENT_LOG": "info"}, 5)], ids=["default", "MESHAGENT_LOG"])
def test_libp2p_noise_in_a_real_process(env: dict[str, str], expected: int) -> None:
    """py-libp2p's own loggers (detached from the root when it is imported) go through meshagent's handler."""
    clean = {k: v for k, v in os.environ.items() if k not in ("MESHAGENT_LOG", "LIBP2P_DEBUG")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**clean, "PYTHONPATH": str(ROOT), **env})
    lines = done.stderr.splitlines()
    noise = [line for line in lines if "Rate limit exceeded" in line]
    assert len(noise) == expected, done.stderr
    assert all(" WARNING libp2p.pubsub.gossipsub: Rate limit exceeded for peer " in line for line in noise)
    assert lines[-1].endswith(" WARNING meshagent.node.mesh: ours")


async def test_a_peer_exchange_that_times_out_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A real peer that takes the exchange stream and never answers: the log line names the reason."""
    from meshagent.config import Config
    from meshagent.net.host import open_host
    from meshagent.node import mesh
    from meshagent.node.identity import load_or_create_identity
    from meshagent.node.membership import Membership
    from meshagent.protocol.exchange import EXCHANGE_PROTOCOL
    from tests.protocol.conftest import make_advert

    monkeypatch.setattr(mesh, "_EXCHANGE_TIMEOUT_S", 1.0)
    a_id, b_id = load_or_create_identity(tmp_path / "a"), load_or_create_identity(tmp_path / "b")

    async def silent(stream: object) -> None:
        await trio.sleep_forever()

    def advert(seq: int, now: float, instance: bytes, started_at: float) -> object:
        return make_advert(a_id.signing_key, seq=seq, now=now, instance=instance, started_at=started_at)

    membership = Membership(a_id, advert, on_duplicate=lambda exc: None)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="meshagent.node.mesh")
    async with open_host(a_id, ["/ip4/127.0.0.1/tcp/0"]) as a, open_host(b_id, ["/ip4/127.0.0.1/tcp/0"]) as b:
        b.set_handler(EXCHANGE_PROTOCOL, silent)
        assert await a.dial(b_id.peer_id, list(b.addrs), timeout=10)
        assert not await mesh.MeshService(a, membership, Config()).exchange_with(b_id.peer_id)
    assert f"peer exchange with {b_id.peer_id} failed: no answer within 1 s" in caplog.messages
