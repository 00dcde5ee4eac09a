"""The composition root: one running meshagent node.

:class:`Node` wires the pieces together — identity, the libp2p host, mesh
membership, the local control API — and owns nothing else. Each duty lives
in its own module; this file only starts them in one nursery and stops them
together.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import trio

from meshagent import __version__
from meshagent.config import Config
from meshagent.errors import ControlError, MeshError
from meshagent.net.host import MeshHost, open_host
from meshagent.node.control import ControlServer, Emit
from meshagent.node.drain import Drain, drain_order
from meshagent.node.hardware import emulate_profile, is_hot, probe_hardware
from meshagent.node.identity import DataDirLock, Identity, ensure_private_dir, load_or_create_identity
from meshagent.node.membership import Membership
from meshagent.node.agents import NodeAgents
from meshagent.node.api import ApiService
from meshagent.node.handoff import HandoffManager, peers_from_membership
from meshagent.node.mesh import MeshService
from meshagent.node.models import NodeModels
from meshagent.node.pairing import PairingService
from meshagent.node.placement import PlacementService
from meshagent.node.trust import TrustStore
from meshagent.protocol.advert import Advert, Hardware, ModelAd
from meshagent.protocol.peers import PeerEntry

__all__ = ["Node", "peer_summary", "default_name"]

log = logging.getLogger(__name__)


CRASH_ENV = "MESHAGENT_CRASH_AT"
"""TEST HOOK: comma-separated handoff crash points (``sender:offered``, ``receiver:stored``, ...; see
:mod:`meshagent.node.handoff`) at which the node SIGKILLs itself. Used by the crash tests and the chaos
runner to die at an exact persisted step; never set it on a real node."""


def crash_hook(spec: str | None) -> Callable[[str], None] | None:
    """The handoff manager's ``crash_point`` callback for ``MESHAGENT_CRASH_AT`` (None when unset)."""
    points = frozenset(p.strip() for p in (spec or "").split(",") if p.strip())
    if not points:
        return None

    def crash(name: str) -> None:
        if name in points:
            log.warning("test hook %s=%s: SIGKILL at %s", CRASH_ENV, spec, name)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    return crash


def default_name(peer_id: str, profile: str, hostname: str) -> str:
    """A node's name when ``[node] name`` is unset: its profile (else the host's short name) and the end
    of its peer id — the short id the tables show — so that nodes on one host differ."""
    base = profile or hostname.split(".")[0] or "node"
    return f"{base}-{peer_id[-6:]}"


def peer_summary(entry: PeerEntry, now: float, *, connected: bool | None = None,
                 on_link: bool | None = None) -> dict[str, Any]:
    """The JSON shape of one peer in ``meshagent peers --json``.

    ``connected``: whether this node holds a connection to it now; ``on_link``: whether one of its
    addresses lies in one of this node's subnets. ``link`` sums them up: ``lan`` or ``wan`` (and
    ``relay`` when it is reached only through a relay), ``None`` while not connected."""
    ad = entry.advert
    hw = ad.hardware
    link = None
    if connected:
        direct = [a for a in ad.addrs if "/p2p-circuit" not in a]
        link = "lan" if on_link else ("wan" if direct else "relay")
    return {
        "peer_id": ad.peer_id,
        "name": ad.name,
        "addrs": list(ad.addrs),
        "connected": connected,
        "link": link,
        "profile": ad.profile,
        "emulated": ad.emulated,
        "arch": hw.arch,
        "os": hw.os,
        "cpu_model": hw.cpu_model,
        "cpu_cores": hw.cpu_cores,
        "ram_total": hw.ram_total,
        "ram_free": hw.ram_free,
        "accelerators": list(hw.accelerators),
        "battery_percent": hw.battery_percent,
        "on_battery": hw.on_battery,
        "models": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(m).items()} for m in ad.models],
        "load": ad.load,
        "tags": list(ad.tags),
        "price_per_1k_tokens": ad.price_per_1k_tokens,
        "seq": ad.seq,
        "last_seen": entry.last_seen,
        "age_s": round(now - entry.last_seen, 3),
        "rtt_ms": None if entry.rtt_ms is None else round(entry.rtt_ms, 3),
    }


def peer_addrs(membership: Membership | None, peer: str) -> tuple[str, ...]:
    """A peer's addresses from its verified advert (none when it is not in the peer table)."""
    entry = membership.table.get(peer) if membership is not None else None
    return entry.advert.addrs if entry is not None else ()


class Node:
    """A meshagent node for one data dir. ``await node.run()`` runs it until :meth:`leave`."""

    def __init__(
        self,
        config: Config,
        data_dir: Path,
        *,
        on_ready: Callable[[Node], None] | None = None,
        handle_signals: bool = False,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self._on_ready = on_ready
        self._handle_signals = handle_signals
        self._fatal: MeshError | None = None
        self._leave = trio.Event()
        self.identity: Identity | None = None
        self.host: MeshHost | None = None
        self.membership: Membership | None = None
        self.trust: TrustStore | None = None
        self.placement: PlacementService | None = None
        self.models: Callable[[], tuple[ModelAd, ...]] = lambda: ()
        self.load: Callable[[], int] = lambda: 0
        self.started_monotonic = 0.0
        self.drain: Drain | None = None
        self.emulated: dict[str, float | bool] = {}
        self._hot: tuple[bool, float] = (False, float("-inf"))
        """Device states set by ``meshagent emulate`` (battery, heat): mocks of what cannot happen here."""

    # --- adverts -------------------------------------------------------------

    def _hardware(self) -> Hardware:
        real = probe_hardware()
        profile = self.config.node.profile
        hw = emulate_profile(real, profile) if profile else real
        battery = self.emulated.get("battery_percent")
        if battery is not None:  # an emulated battery (`meshagent emulate`): what a laptop here cannot do for real
            hw = replace(hw, battery_percent=float(battery), on_battery=bool(self.emulated.get("on_battery", True)))
        return hw

    def hot(self) -> bool:
        """The device is hot: its thermal sensors say so, or an emulated state does."""
        emulated = self.emulated.get("hot")
        if emulated is not None:
            return bool(emulated)
        now = time.monotonic()
        if now - self._hot[1] > 5.0:  # sensors are read at most every 5 s (each call for bids asks)
            self._hot = (is_hot(), now)
        return self._hot[0]

    async def _op_emulate(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Emulate device states this machine cannot really be in (a mock, named as such):
        ``battery_percent`` (with ``on_battery``, default true) and ``hot``; null clears one."""
        for key in ("battery_percent", "on_battery", "hot"):
            if key not in params:
                continue
            value = params[key]
            if value is None:
                self.emulated.pop(key, None)
            elif key == "battery_percent" and isinstance(value, (int, float)) and 0 <= value <= 100:
                self.emulated[key] = float(value)
            elif key != "battery_percent" and isinstance(value, bool):
                self.emulated[key] = value
            else:
                raise ControlError(f"emulate: bad value for {key}: {value!r}")
        assert self.membership is not None
        self.membership.refresh_own()
        return {"emulated": dict(self.emulated), "hot": self.hot(), "battery_percent": self._hardware().battery_percent}

    def build_advert_name(self) -> str:
        assert self.identity is not None
        return self.config.node.name or default_name(self.identity.peer_id, self.config.node.profile, platform.node())

    def build_advert(self, seq: int, now: float, instance: bytes, started_at: float) -> Advert:
        assert self.identity is not None and self.host is not None
        node = self.config.node
        return Advert(
            peer_id=self.identity.peer_id,
            seq=seq,
            issued_at=now,
            expires_at=now + node.advert_ttl_s,
            name=self.build_advert_name(),
            addrs=self.host.addrs,
            hardware=self._hardware(),
            sealing_key=self.identity.sealing_public,
            sealing_key_sig=self.identity.sealing_binding,
            instance=instance,
            started_at=started_at,
            profile=node.profile,
            emulated=bool(node.profile),
            models=self.models(),
            load=self.load(),
            tags=node.tags,
            price_per_1k_tokens=node.price_per_1k_tokens,
            extra={"version": __version__},
            **self._pq_sealing(),
        )

    def _pq_sealing(self) -> dict[str, bytes]:
        """The hybrid sealing key and its binding, advertised only with ``[net] sealing_suite = "hybrid"``."""
        assert self.identity is not None
        if self.config.net.sealing_suite != "hybrid":
            return {}
        return {"sealing_key_pq": self.identity.hybrid_public, "sealing_key_pq_sig": self.identity.hybrid_binding}

    # --- control API -----------------------------------------------------------

    async def _op_status(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        assert self.identity and self.host and self.membership
        own = self.membership.own_advert
        from meshagent.protocol.advert import decode_advert

        advert = decode_advert(own, now=time.time())
        return {
            "peer_id": self.identity.peer_id,
            "name": advert.name,
            "addrs": list(self.host.p2p_addrs),
            "profile": self.config.node.profile,
            "uptime_s": round(trio.current_time() - self.started_monotonic, 3),
            "data_dir": str(self.data_dir),
            "version": __version__,
            "peers": len(self.membership.table),
            "connected": len(self.host.connected_peers()),
            "adverts_dropped": self.membership.dropped,
            "api_url": getattr(getattr(self, "api", None), "url", None),
            "advert": peer_summary(PeerEntry(advert, advert.issued_at, advert.issued_at), advert.issued_at),
        }

    async def _op_peers(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        assert self.membership and self.host and self.placement
        now = time.time()
        connected = set(self.host.connected_peers())
        peers = [peer_summary(e, now, connected=peer in connected, on_link=self.placement.on_link(peer))
                 for peer, e in self.membership.table.items()]
        peers.sort(key=lambda p: (p["name"], p["peer_id"]))
        return {"peers": peers}

    async def _op_rtt_probe(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return {"rtt_ms": await self.mesh.rtt_probe()}

    async def _op_leave(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Control op ``leave``: hand running agents to peers (unless ``{"drain": false}``), then stop."""
        report = await self.drain.run(emit) if params.get("drain", True) and self.drain is not None else {}
        self.leave()
        return {"leaving": True, **report}

    def leave(self) -> None:
        """Stop the node cleanly (goodbyes are sent on the way out)."""
        self._leave.set()

    def _stop_with(self, error: MeshError) -> None:
        log.error("%s", error)
        self._fatal = error
        self._leave.set()

    # --- running ---------------------------------------------------------------

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                async for signum in signals:
                    log.info("received %s: leaving", signal.Signals(signum).name)
                    if self.drain is None or self.drain.draining:
                        self.leave()  # a second signal (or no agents runtime yet): stop now
                    else:
                        nursery.start_soon(self._drain_then_leave)

    async def _drain_then_leave(self) -> None:
        assert self.drain is not None
        await self.drain.run()
        self.leave()

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        ensure_private_dir(self.data_dir)
        with DataDirLock(self.data_dir):
            self.identity = load_or_create_identity(self.data_dir)
            self.started_monotonic = trio.current_time()
            self.node_models = NodeModels(self.config, self.data_dir)
            await self.node_models.load()
            self.models = self.node_models.adverts
            async with open_host(self.identity, self.config.net.listen, interface=self.config.net.interface) as host:
                self.host = host
                self.trust = TrustStore(self.data_dir)
                self.membership = Membership(self.identity, self.build_advert, on_duplicate=self._stop_with,
                                             advert_ttl_s=self.config.node.advert_ttl_s, protected=self.trust.peers)
                pairing = PairingService(host, self.membership, self.trust, self.build_advert_name())
                self.placement = PlacementService(host, self.membership, self.trust, self.config, models=self.node_models.adverts)
                self.mesh = MeshService(host, self.membership, self.config)
                self.agents = NodeAgents(
                    self.config, self.data_dir, host=host, models=self.node_models, placement=self.placement, trust=self.trust,
                    addrs=lambda peer: peer_addrs(self.membership, peer),
                )
                self.placement.set_busy(self.agents.busy_s)
                self.placement.hot = self.hot
                membership, me = self.membership, self.identity.peer_id
                self.drain = Drain(
                    agents=lambda: [(a.agent_id, a.status) for a in self.agents.manager.agents()],
                    migrate=lambda params, emit: self.handoff.migrate(params, emit),
                    peers=lambda: drain_order(membership.table.values(), me),
                )
                self.load = self.agents.load
                self.handoff = HandoffManager(
                    data_dir=self.data_dir,
                    identity=self.identity,
                    host=host,
                    custody=self.agents.custody,
                    peers=peers_from_membership(self.membership),
                    trusted=lambda peer: peer in self.trust,  # type: ignore[operator]
                    on_lan=self.placement.on_link,
                    crash_point=crash_hook(os.environ.get(CRASH_ENV)),
                    admit=self.drain.admit,
                    sealing_suite=self.config.net.sealing_suite,
                )
                self.agents.handoff = self.handoff
                self.api = api = ApiService(self.config.api, self.data_dir, membership=self.membership, placement=self.placement,
                                 agents=self.agents, peer_id=self.identity.peer_id)
                control = ControlServer(
                    self.data_dir,
                    {
                        "status": self._op_status,
                        "peers": self._op_peers,
                        "leave": self._op_leave,
                        **pairing.install(),
                        **self.placement.install(),
                        **self.agents.handlers(),
                        **self.handoff.handlers(),
                        "rtt_probe": self._op_rtt_probe,
                        "emulate": self._op_emulate,
                        **api.handlers(),
                    },
                )
                async with trio.open_nursery() as nursery:
                    await nursery.start(control.run)
                    await nursery.start(self.mesh.run)
                    await nursery.start(self.agents.run)
                    await nursery.start(self.handoff.run)
                    await nursery.start(api.run)
                    if self._handle_signals:
                        nursery.start_soon(self._watch_signals)
                    nursery.start_soon(self.node_models.self_benchmark)
                    if self._on_ready is not None:
                        self._on_ready(self)
                    task_status.started(self)
                    await self._leave.wait()
                    nursery.cancel_scope.cancel()
        if self._fatal is not None:
            raise self._fatal
