"""Naming peers on the command line: the short id the tables show, and finding a peer from what the user typed.

Every command that takes a peer (``migrate --to``, ``snapshot export --to``,
``pair --peer``) accepts its full id, its name, or a unique part of its id
from either end — the six characters the tables show are the id's end, since
every libp2p Ed25519 id starts ``12D3KooW`` — or the start of its name (a
default name is the profile and the short id, so ``--to laptop`` finds
``laptop-ouy4ym``). The resolution happens here, on
the command line side, against the node's peer table; the node is then given
the full id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from meshagent.errors import ConfigError, DecodeError

__all__ = ["SHORT_ID", "short_id", "label", "match_peer", "resolve_peer"]

SHORT_ID: Final = 6
"""Characters of a peer id the tables show: its last ones."""
_MIN_PART: Final = 3
"""The shortest part of an id accepted (fewer would match by chance)."""


def short_id(peer_id: str) -> str:
    return peer_id[-SHORT_ID:]


def label(peer: Mapping[str, Any]) -> str:
    """``name (short id)``, or the name alone when it already ends with the short id (the default names)."""
    name, short = str(peer.get("name") or ""), short_id(str(peer["peer_id"]))
    if not name:
        return short
    return name if name.endswith(short) else f"{name} ({short})"


def match_peer(text: str, peers: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The one peer ``text`` names: a full id, a name, the start of a name, or a unique start or end of an
    id (any case). The first of these rules that matches anything decides.

    :class:`ConfigError` with one line when none matches or several do (listing them)."""
    wanted = text.strip()
    if not wanted:
        raise ConfigError("name a peer: its name or the id shown by meshagent peers")
    for rule in (
        lambda p: p["peer_id"] == wanted,
        lambda p: str(p.get("name") or "").casefold() == wanted.casefold(),
        lambda p: str(p.get("name") or "").casefold().startswith(wanted.casefold()),
        lambda p: len(wanted) >= _MIN_PART and (p["peer_id"].casefold().endswith(wanted.casefold())
                                                or p["peer_id"].casefold().startswith(wanted.casefold())),
    ):
        found = [p for p in peers if rule(p)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            shown = ", ".join(f"{label(p)} {p['peer_id']}" for p in found[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise ConfigError(f"{wanted!r} matches {len(found)} peers: {shown}{more}; give more of the id")
    if len(wanted) < _MIN_PART:
        raise ConfigError(f"{wanted!r} is too short to name a peer: give its name or at least {_MIN_PART} "
                          "characters of its id")
    raise ConfigError(f"no peer named {wanted!r}: meshagent peers lists the peers this node knows")


def resolve_peer(data_dir: Path, text: str) -> Mapping[str, Any]:
    """The peer ``text`` names (its ``peer_id`` and ``name``), from the node's peer table and paired devices."""
    from meshagent.node.control import call

    peers: list[Mapping[str, Any]] = list(call(data_dir, "peers")["peers"])
    known = {p["peer_id"] for p in peers}
    peers += [d for d in call(data_dir, "trusted")["devices"] if d["peer_id"] not in known]
    try:
        return match_peer(text, peers)
    except ConfigError:
        if _is_full_id(text.strip()):  # a peer this node does not list: the node says what it makes of it
            return {"peer_id": text.strip(), "name": ""}
        raise


def _is_full_id(text: str) -> bool:
    from meshagent.protocol.signed import public_key_from_peer_id

    try:
        public_key_from_peer_id(text)
    except DecodeError:
        return False
    return True
