"""Why an agent the node ran did not finish: the failure line, with what the user can do about it.

A step that no peer may run fails the agent with the auction's bare reason
(``no bids``). The node's own tables say more: which peers hold a model for
the step, and whether the privacy class kept them out. This module reads them
(``auctions``, ``peers``, ``trusted``) and says it in the one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshagent.errors import MeshError

__all__ = ["explain_failures", "no_peer_hint"]

_NO_PEER = "no peer can run this step"


def no_peer_hint(auction: dict[str, Any], peers: list[dict[str, Any]], trusted: set[str]) -> str:
    """What kept every peer out of an auction that found no winner, and what to do."""
    from meshagent.cli.peers import label
    from meshagent.protocol.advert import ModelAd
    from meshagent.runtime.local import model_fits

    want = str(auction.get("requirement") or "")
    privacy = str(auction.get("privacy") or "private")
    holders = [p for p in peers
               if any(model_fits(ModelAd(**{k: tuple(v) if isinstance(v, list) else v for k, v in m.items()}), want)
                      for m in p.get("models", []) if m.get("kind") == "llm")]
    if not holders:
        return "no peer holds a model for it: add one to a node's config (see meshagent models)"
    declined = {d["bidder"]: d["reason"] for d in auction.get("declines", [])}
    if privacy == "private":
        outside = [p for p in holders if p["peer_id"] not in trusted]
        inside = [p for p in holders if p["peer_id"] in trusted]
        if inside:
            said = "; ".join(f"{label(p)} declined: {declined[p['peer_id']]}" if p["peer_id"] in declined
                             else f"{label(p)} did not bid" for p in inside)
            return said
        names = ", ".join(label(p) for p in outside[:3])
        return (f"{names} {'holds' if len(outside) == 1 else 'hold'} a model for it but "
                f"{'is not one' if len(outside) == 1 else 'are not'} of your paired devices; pair a device that "
                "holds one (meshagent pair), or allow more with --privacy lan or --privacy any")
    said = "; ".join(f"{label(p)} declined: {declined[p['peer_id']]}" if p["peer_id"] in declined
                     else f"{label(p)} did not bid" for p in holders[:3])
    more = " (lan admits only peers on this link; --privacy any admits every peer)" if privacy == "lan" else ""
    return f"{said}{more}"


def explain_failures(data_dir: Path, outcomes: list[Any]) -> dict[str, str]:
    """Failure lines with a hint, for agents that failed because no peer could run a step."""
    from meshagent.node.control import call

    stuck = [o for o in outcomes if o.status == "failed" and _NO_PEER in str(o.error_message or "")]
    if not stuck:
        return {}
    try:
        auctions = call(data_dir, "auctions")["auctions"]
        peers = call(data_dir, "peers")["peers"]
        trusted = {d["peer_id"] for d in call(data_dir, "trusted")["devices"]}
    except MeshError:  # the node went away meanwhile: the plain line says enough
        return {}
    lines = {}
    for o in stuck:
        mine = [a for a in auctions if a.get("agent_id") == o.agent_id and a.get("winner") is None]
        if mine:
            want = mine[-1].get("requirement") or "an LLM"
            lines[o.agent_id] = (f"meshagent: agent {o.agent_id} failed: no peer may run its step (it needs {want}, "
                                 f"privacy {mine[-1].get('privacy')}): {no_peer_hint(mine[-1], peers, trusted)}")
    return lines
