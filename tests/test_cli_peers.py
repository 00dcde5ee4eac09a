"""Finding a peer from what the user typed, default node names, and where the API can be reached."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from meshagent.cli.node import api_banner
from meshagent.cli.peers import label, match_peer, short_id
from meshagent.config import ApiConfig, Config
from meshagent.errors import ConfigError
from meshagent.net.addresses import local_addresses
from meshagent.node.api.service import reachable_url
from meshagent.node.node import default_name

LAPTOP = {"peer_id": "12D3KooWGvRHXUvmQbbXcgdnQ1UZdXqdW696AahjfMW3CHSouy4ym", "name": "laptop-ouy4ym"}
PHONE = {"peer_id": "12D3KooWSCUyUq9LRdB6niTT7hxNVLMgNWCiEQisNsgEKxLJsGNb", "name": "phone"}
PHONE2 = {"peer_id": "12D3KooWAxMW1uJK99u8dVjCRnSbwh6B3ZiQVfAkmzJE5oDJtmuU", "name": "phone-2"}
PEERS = [LAPTOP, PHONE, PHONE2]


@pytest.mark.parametrize(("text", "found"), [
    (LAPTOP["peer_id"], LAPTOP),
    ("laptop-ouy4ym", LAPTOP),
    ("Laptop", LAPTOP),           # the start of a name, any case
    ("ouy4ym", LAPTOP),           # the short id the tables show
    ("OUY4YM", LAPTOP),
    ("phone", PHONE),             # an exact name wins over the names it starts
    ("oDJtmuU", PHONE2),
    ("12D3KooWSCU", PHONE),       # the start of an id
])
def test_a_peer_is_found_by_id_name_or_a_part(text: str, found: dict[str, str]) -> None:
    assert match_peer(text, PEERS) == found


@pytest.mark.parametrize(("text", "line"), [
    ("ph", "'ph' matches 2 peers: phone (LJsGNb) 12D3KooWSCUyUq9LRdB6niTT7hxNVLMgNWCiEQisNsgEKxLJsGNb, "
           "phone-2 (DJtmuU) 12D3KooWAxMW1uJK99u8dVjCRnSbwh6B3ZiQVfAkmzJE5oDJtmuU; give more of the id"),
    ("12D3KooW", "'12D3KooW' matches 3 peers: laptop-ouy4ym 12D3KooWGvRHXUvmQbbXcgdnQ1UZdXqdW696AahjfMW3CHSouy4ym, "
                 "phone (LJsGNb) 12D3KooWSCUyUq9LRdB6niTT7hxNVLMgNWCiEQisNsgEKxLJsGNb, phone-2 (DJtmuU) "
                 "12D3KooWAxMW1uJK99u8dVjCRnSbwh6B3ZiQVfAkmzJE5oDJtmuU; give more of the id"),
    ("toaster", "no peer named 'toaster': meshagent peers lists the peers this node knows"),
    ("4y", "'4y' is too short to name a peer: give its name or at least 3 characters of its id"),
    (" ", "name a peer: its name or the id shown by meshagent peers"),
])
def test_an_ambiguous_or_unknown_peer_is_one_line(text: str, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        match_peer(text, PEERS)
    assert str(caught.value) == line


def test_labels_and_default_names() -> None:
    assert short_id(LAPTOP["peer_id"]) == "ouy4ym"
    assert label(LAPTOP) == "laptop-ouy4ym" and label(PHONE) == "phone (LJsGNb)"
    assert default_name(LAPTOP["peer_id"], "laptop", "vm") == "laptop-ouy4ym"
    assert default_name(LAPTOP["peer_id"], "", "vm.example.org") == "vm-ouy4ym"  # no profile: the host's short name
    assert default_name(PHONE["peer_id"], "", "vm") != default_name(PHONE2["peer_id"], "", "vm")  # one host, two nodes


def test_a_wildcard_api_bind_is_shown_as_an_address_to_open() -> None:
    url = reachable_url("http://0.0.0.0:4780")
    host = url.removeprefix("http://").rsplit(":", 1)[0]
    usable = [a.ip for a in local_addresses() if a.ip.version == 4 and not a.is_loopback and not a.is_link_local]
    if usable:
        assert ipaddress.ip_address(host) == usable[0] and url.endswith(":4780")
    else:  # a machine with loopback alone: nothing better to name
        assert url == "http://0.0.0.0:4780"
    assert reachable_url("http://127.0.0.1:4781") == "http://127.0.0.1:4781"


def test_the_banner_shows_the_token_beyond_loopback(tmp_path: Path) -> None:
    loopback = Config()
    assert api_banner("http://127.0.0.1:4780", tmp_path, loopback) == "OpenAI-compatible API and dashboard: http://127.0.0.1:4780"
    (tmp_path / "api.token").write_text("mesh-secret\n")
    lan = Config(api=ApiConfig(bind="0.0.0.0"))
    assert api_banner("http://10.77.0.1:4780", tmp_path, lan) == (
        f"OpenAI-compatible API: http://10.77.0.1:4780 (bearer token in {tmp_path / 'api.token'}); "
        "dashboard: http://10.77.0.1:4780/?token=mesh-secret")
    configured = Config(api=ApiConfig(bind="0.0.0.0", token="tok"))
    assert api_banner("http://10.77.0.1:4780", tmp_path, configured) == (
        "OpenAI-compatible API: http://10.77.0.1:4780 (bearer token from [api] token); "
        "dashboard: http://10.77.0.1:4780/?token=tok")
