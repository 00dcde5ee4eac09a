"""The simulated mesh: devices, sites and links, adverts in a real peer table, churn.

A *site* is one owner's local network: the owner's phone, laptop and Raspberry Pi
(paired: the owner's devices), and devices of other people on the same LAN (a
colleague's laptop, a shared GPU box). Cloud GPUs sit in a datacenter, reached
over the WAN, on nobody's link. Every node's view of the mesh is the same
:class:`~meshagent.protocol.peers.PeerTable`, fed with adverts and goodbyes the
way gossip would (a simplification: a real mesh converges in seconds, see
``meshagent bench discovery``).

:class:`Device` is mutable simulation state (queue, battery, reservations), not a
message; everything it sends (adverts, bids) is a frozen protocol dataclass.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import simpy

from meshagent.protocol.advert import Advert, Goodbye, Hardware, ModelAd
from meshagent.protocol.auction import BidderContext, CallForBids, Reservations
from meshagent.protocol.peers import Outcome, PeerEntry, PeerTable
from meshagent.protocol.signed import PeerId

from simulations.devices import DEVICE_CLASSES, LINKS, WAN, DeviceClass, Link, model_ads

__all__ = ["Layout", "Device", "World", "build_world", "ADVERT_TTL_S", "ADVERT_INTERVAL_S", "LIE_FACTOR"]

ADVERT_TTL_S: Final = 12.0
"""``[node] advert_ttl_s`` default (config/default.toml): a silent peer leaves tables after this."""
ADVERT_INTERVAL_S: Final = 3.0
LIE_FACTOR: Final = 10.0
"""A lying peer claims to be this many times faster than it is, in its adverts and so in its bids."""
CLOUD_SITE: Final = -1
_DUMMY_KEY: Final = b"\x00" * 32


@dataclass(frozen=True, slots=True)
class Layout:
    sites: int
    clouds: int
    liar_share: float = 0.0
    """Share of the devices not owned by any agent owner that lie about their speed."""
    churn: bool = True
    lte_phone_share: float = 0.25
    """Share of owners whose phone is out, on LTE (then not on the owner's link)."""
    identical: str | None = None
    """Every device of this class, all on one site's LAN (the sanity check)."""
    mean_up_s: float = 1800.0
    mean_down_s: float = 300.0


SITE_DEVICES: Final = (("phone", True), ("laptop", True), ("pi", True), ("laptop", False), ("edge_gpu", None))
"""Per site: (class, owned by the site's owner). The owner holds the phone and the first laptop.
The GPU box (None) is the owner's own on even sites and a neighbour's, shared at a price, on odd ones."""


@dataclass(slots=True)
class Device:
    peer: PeerId
    cls: DeviceClass
    site: int
    owner: int | None
    """Site index of the owner whose paired device this is (None: someone else's)."""
    link: Link
    liar: bool
    ads: tuple[ModelAd, ...]
    slots: simpy.Resource
    price_per_1k_tokens: float = 0.0
    """What it charges others; an owner's own devices are free to the owner (electricity is counted)."""
    role: str = ""
    """Its place on the site (``phone``, ``laptop``...), even when the class is overridden."""
    held: bool = False
    """The device its owner holds: it never leaves the mesh."""
    alive: bool = True
    on_battery: bool = False
    battery_wh: float | None = None
    reservations: Reservations = field(default_factory=Reservations)
    outstanding_s: float = 0.0
    """Work queued or running here, in the device's own (advertised) terms."""
    kv_cache: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Agent id -> (model sha256, context tokens) of KV prefixes it still holds for agents it hosted."""
    downtimes: tuple[tuple[float, float], ...] = ()
    seq: int = 0
    instance: int = 0

    @property
    def battery_percent(self) -> float | None:
        if self.battery_wh is None or self.cls.battery_wh is None:
            return None
        return 100.0 * self.battery_wh / self.cls.battery_wh

    def next_down(self, now: float) -> float | None:
        """When this device next leaves the mesh at or after ``now`` (None: not before the horizon)."""
        for down, _ in self.downtimes:
            if down >= now:
                return down
        return None

    def true_model(self, ad: ModelAd) -> ModelAd:
        """What the advertised model really does (a liar's speeds divided back)."""
        if not self.liar:
            return ad
        for honest in model_ads(self.cls):
            if honest.sha256 == ad.sha256:
                return honest
        return ad


class World:
    """Devices, topology and the shared peer table of one simulated mesh."""

    def __init__(self, env: simpy.Environment, devices: list[Device]) -> None:
        self.env = env
        self.devices: dict[PeerId, Device] = {d.peer: d for d in devices}
        self.table = PeerTable()
        self._view: dict[PeerId, Advert] | None = None
        self._rtt_ms: dict[PeerId, dict[PeerId, float]] = {}
        sites = {d.owner for d in devices if d.owner is not None}
        self._owned = {o: frozenset(d.peer for d in devices if d.owner == o) for o in sites}
        self._on_link = {
            o: frozenset(d.peer for d in devices if d.site == o and d.link.name != "lte") for o in sites
        }
        self._held = {(d.owner, d.role): d.peer for d in devices if d.held}
        entries = {}
        for d in devices:
            if d.alive:
                d.seq += 1
                entries[d.peer] = self._advert(d, env.now)
        # Bulk start: one table built at once (apply_advert per peer would copy the table n times).
        self.table = PeerTable({p: PeerEntry(a, first_seen=env.now, last_seen=env.now) for p, a in entries.items()})

    # --- what the protocol code is fed -------------------------------------------------

    def adverts(self) -> Mapping[PeerId, Advert]:
        if self._view is None:
            self._view = {p: e.advert for p, e in self.table.items()}
        return self._view

    def owner_devices(self, owner: int) -> frozenset[PeerId]:
        return self._owned.get(owner, frozenset())

    def on_link(self, owner: int) -> frozenset[PeerId]:
        return self._on_link.get(owner, frozenset())

    def held(self, owner: int, role: str) -> Device:
        """The device ``owner`` holds in this role (``phone`` or ``laptop``)."""
        return self.devices[self._held[(owner, role)]]

    def rtt_ms(self, home: PeerId) -> dict[PeerId, float]:
        cached = self._rtt_ms.get(home)
        if cached is None:
            cached = {p: self.path(home, p)[1] * 1000.0 for p in self.devices}
            self._rtt_ms[home] = cached
        return cached

    def path(self, a: PeerId, b: PeerId) -> tuple[float, float]:
        """(bytes per second, round-trip seconds) between two devices."""
        if a == b:
            return float("inf"), 0.0
        da, db = self.devices[a], self.devices[b]
        bps = min(da.link.bytes_per_s, db.link.bytes_per_s)
        rtt = da.link.rtt_s + db.link.rtt_s
        local = da.site == db.site and da.link.name != "lte" and db.link.name != "lte"
        if not local:
            bps, rtt = min(bps, WAN.bytes_per_s), rtt + WAN.rtt_s
        return bps, rtt

    def bidder_context(self, dev: Device, call: CallForBids, owner: int) -> BidderContext:
        bps, rtt = self.path(call.home, dev.peer)
        cached_model, cached_tokens = dev.kv_cache.get(call.agent_id, ("", 0))
        return BidderContext(
            me=dev.peer,
            models=dev.ads,
            price_per_1k_tokens=dev.price_per_1k_tokens,
            slots=dev.cls.slots,
            busy_s=dev.outstanding_s,
            trusts_owner=dev.owner == owner,
            home_on_link=dev.peer in self.on_link(owner),
            path_bps=bps,
            rtt_s=rtt,
            on_battery=dev.on_battery,
            battery_percent=dev.battery_percent,
            cached_model_sha256=cached_model,
            cached_tokens=cached_tokens,
        )

    # --- adverts, goodbyes, expiry ---------------------------------------------------

    def _advert(self, d: Device, now: float) -> Advert:
        pct = d.battery_percent
        return Advert(
            peer_id=d.peer,
            seq=d.seq,
            issued_at=now,
            # Live peers republish every few seconds; the sim re-issues on change instead.
            expires_at=now + 1e9,
            name=f"{d.cls.name}-{d.peer[-4:]}",
            addrs=(f"/ip4/10.{d.site % 250}.0.1/tcp/4737",),
            hardware=Hardware(
                arch=d.cls.arch, os=d.cls.os, cpu_model=d.cls.name, cpu_cores=8,
                ram_total=int(d.cls.memory_gb * (1 << 30)), ram_free=int(d.cls.memory_gb * (1 << 29)),
                battery_percent=None if pct is None else round(pct, 1), on_battery=d.on_battery,
            ),
            sealing_key=_DUMMY_KEY,
            sealing_key_sig=b"\x00" * 64,
            instance=d.instance.to_bytes(8, "big"),
            started_at=float(d.instance),
            profile=d.cls.name,
            emulated=True,
            models=d.ads,
            price_per_1k_tokens=d.price_per_1k_tokens,
        )

    def publish(self, d: Device) -> Outcome:
        d.seq += 1
        self.table, outcome = self.table.apply_advert(self._advert(d, self.env.now), self.env.now)
        self._view = None
        return outcome

    def _leave(self, d: Device, rng: random.Random) -> Generator[simpy.Event, object, None]:
        d.alive = False
        if rng.random() < 0.5:  # clean shutdown: a signed goodbye
            self.table, _ = self.table.apply_goodbye(Goodbye(d.peer, d.seq, d.instance.to_bytes(8, "big")))
            self._view = None
            return
        # Killed or unplugged: peers keep its last advert until it expires.
        last = self.env.now - rng.uniform(0.0, ADVERT_INTERVAL_S)
        d.seq += 1
        stale = replace(self._advert(d, last), expires_at=last + ADVERT_TTL_S)
        self.table, _ = self.table.apply_advert(stale, self.env.now)
        self._view = None
        yield self.env.timeout(max(last + ADVERT_TTL_S - self.env.now, 0.0))
        self.table, gone = self.table.expire(self.env.now)
        if gone:
            self._view = None

    def _join(self, d: Device) -> Generator[simpy.Event, object, None]:
        d.alive = True
        d.instance += 1
        d.reservations = Reservations()
        d.kv_cache.clear()  # a restarted process has lost its caches
        while self.publish(d) is Outcome.DUPLICATE:
            # Its previous instance's advert is still live somewhere: refused until it expires.
            yield self.env.timeout(ADVERT_INTERVAL_S)
            self.table, _ = self.table.expire(self.env.now)
            self._view = None

    def churn(self, d: Device, rng: random.Random) -> Generator[simpy.Event, object, None]:
        """SimPy process: the device leaves and rejoins on its precomputed schedule."""
        for down, up in d.downtimes:
            yield self.env.timeout(max(down - self.env.now, 0.0))
            yield from self._leave(d, rng)
            yield self.env.timeout(max(up - self.env.now, 0.0))
            yield from self._join(d)

    def plugging(self, d: Device, rng: random.Random, horizon: float) -> Generator[simpy.Event, object, None]:
        """SimPy process: a battery device is unplugged and plugged in again (recharged)."""
        while self.env.now < horizon:
            yield self.env.timeout(rng.expovariate(1.0 / 1800.0))
            d.on_battery = not d.on_battery
            if not d.on_battery and d.cls.battery_wh is not None:
                d.battery_wh = d.cls.battery_wh
            self.publish(d)


def _peer_id(rng: random.Random) -> PeerId:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    return PeerId("12D3KooW" + "".join(rng.choice(alphabet) for _ in range(44)))


def _downtimes(rng: random.Random, layout: Layout, horizon: float) -> tuple[tuple[float, float], ...]:
    out = []
    t = rng.expovariate(1.0 / layout.mean_up_s)
    while t < horizon:
        up = t + rng.expovariate(1.0 / layout.mean_down_s)
        out.append((t, up))
        t = up + rng.expovariate(1.0 / layout.mean_up_s)
    return tuple(out)


def build_world(env: simpy.Environment, layout: Layout, *, seed: int, horizon: float) -> World:
    """A mesh after ``layout``; the same seed gives the same devices, liars and schedules."""
    rng = random.Random(f"world/{seed}")
    plan: list[tuple[str, str, int, int | None, bool]] = []  # class, role, site, owner, held
    for s in range(layout.sites):
        held_seen: set[str] = set()
        for role, ownership in SITE_DEVICES:
            owned = ownership if ownership is not None else s % 2 == 0
            name = layout.identical or role
            held = owned and role in ("phone", "laptop") and role not in held_seen
            if held:
                held_seen.add(role)
            plan.append((name, role, s, s if owned else None, held))
    cloud = layout.identical or "cloud_gpu"
    plan += [(cloud, "cloud_gpu", CLOUD_SITE if layout.identical is None else 0, None, False)] * layout.clouds
    liars: set[int] = set()
    for kind in sorted({name for name, *_ in plan}):  # the same share of every class lies
        strangers = [i for i, (name, _, _, owner, _) in enumerate(plan) if owner is None and name == kind]
        liars |= set(rng.sample(strangers, round(layout.liar_share * len(strangers))))
    devices = []
    for i, (name, role, site, owner, held) in enumerate(plan):
        cls = DEVICE_CLASSES[name]
        link = LINKS[cls.link]
        if layout.identical is not None:
            link = LINKS["ethernet"]
        elif role == "phone" and rng.random() < layout.lte_phone_share:
            link = LINKS["lte"]
        liar = i in liars
        d = Device(
            peer=_peer_id(rng),
            cls=cls,
            site=site,
            owner=owner,
            link=link,
            liar=liar,
            ads=model_ads(cls, claim=LIE_FACTOR if liar else 1.0),
            slots=simpy.Resource(env, capacity=cls.slots),
            price_per_1k_tokens=cls.price_per_1k_tokens if owner is None else 0.0,
            role=role,
            held=held,
            battery_wh=cls.battery_wh,
            on_battery=layout.identical is None and cls.battery_wh is not None and rng.random() < 0.5,
        )
        if layout.churn and not held:
            d.downtimes = _downtimes(rng, layout, horizon)
        devices.append(d)
    world = World(env, devices)
    for d in devices:
        proc_rng = random.Random(f"device/{seed}/{d.peer}")
        if d.downtimes:
            env.process(world.churn(d, proc_rng))
        if layout.churn and d.cls.battery_wh is not None:
            env.process(world.plugging(d, proc_rng, horizon))
    return world
