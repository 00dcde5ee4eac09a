"""Fuzz every decoder that reads bytes from the network or the disk: only MeshError may escape.

Inputs are random bytes, random CBOR documents, CBOR maps of the decoder's own
field names with random values and, where the bytes are signed, envelopes
validly signed by some key (so the fuzzing reaches past the signature check
into the field validation). Example counts: see ``conftest.py``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from meshagent.inference import kvblob
from meshagent.net import handoff as net_handoff
from meshagent.net.mdns import parse_txt
from meshagent.node.identity import load_or_create_identity
from meshagent.node.snapshots import from_sections
from meshagent.protocol import advert, auction, codec, exchange, pairing, signed
from meshagent.protocol import handoff as handoff_proto
from meshagent.protocol import results as results_proto
from meshagent.protocol import snapshot as snap
from meshagent.runtime.bundle import decode_family
from meshagent.runtime.journal import Journal
from meshagent.runtime.services import LlmOptions, parse_llm_options
from meshagent.runtime.snapshot import AgentSnapshot
from tests.hostile.fuzzing import FUZZ, cbor_values, inputs, maps_with, only_project_errors

KEY = Ed25519PrivateKey.generate()
NOW = time.time()


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-ids")
    return load_or_create_identity(root / "a"), load_or_create_identity(root / "b")


def signed_maps(kind: str, keys: list[str]) -> st.SearchStrategy[bytes]:
    """Envelopes of ``kind`` validly signed by KEY around random maps of the given field names."""
    return st.one_of(maps_with(keys), st.binary(max_size=300)).map(lambda payload: signed.sign(kind, payload, KEY))


def names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


# --- wire frames and CBOR -------------------------------------------------------------------


@FUZZ
@given(inputs())
def test_fuzz_cbor_documents(data):
    only_project_errors("codec.decode", lambda: codec.decode(data, max_size=4096, max_depth=4))


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(8, 1 << 16))
def test_fuzz_wire_frames(pieces, max_size):
    reader = codec.FrameReader(max_size=max_size)

    def feed() -> None:
        for piece in pieces:
            for frame in reader.feed(piece):
                assert len(frame) <= max_size
        assert reader.pending() < max_size + 4

    only_project_errors("codec.FrameReader", feed)


# --- membership: adverts, goodbyes, peer exchange, pairing, mDNS ----------------------------------


ADVERT_FIELDS = names(advert.Advert) + ["hardware", "models", "extra"]


@FUZZ
@given(st.one_of(inputs(ADVERT_FIELDS), signed_maps(advert.ADVERT_KIND, ADVERT_FIELDS)))
def test_fuzz_adverts(data):
    only_project_errors("advert.decode_advert", lambda: advert.decode_advert(data, now=NOW))


@FUZZ
@given(st.one_of(inputs(names(advert.Goodbye)), signed_maps(advert.GOODBYE_KIND, names(advert.Goodbye))))
def test_fuzz_goodbyes(data):
    only_project_errors("advert.decode_goodbye", lambda: advert.decode_goodbye(data))


@FUZZ
@given(st.one_of(inputs(["t", "adverts", "goodbye"]),
                 st.lists(st.binary(max_size=200), max_size=40).map(lambda a: codec.encode({"t": "px", "adverts": a}))))
def test_fuzz_peer_exchange(data):
    only_project_errors("exchange.decode", lambda: exchange.decode(data))


@FUZZ
@given(st.one_of(inputs(), st.tuples(st.integers(0, 6), inputs(["x", "y", "confirm", "name", "reason"])).map(
    lambda t: bytes([t[0]]) + t[1])))
def test_fuzz_pairing(data):
    only_project_errors("pairing.decode", lambda: pairing.decode(data))


@FUZZ
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), st.text(max_size=20))
def test_fuzz_pairing_exchange(element, mac, name):
    """A peer's SPAKE2 element and confirmation, whatever they are, into both sides of the exchange."""
    def feed() -> None:
        shower = pairing.Shower("123456", me="A", joiner="B", name="a", random_bytes=os.urandom(64))
        if shower.receive(pairing.encode(pairing.Start(element, name[:100]))) is not None:
            shower.receive(pairing.encode(pairing.Confirm(mac)))
        joiner = pairing.Joiner("123456", me="B", shower="A", name="b", random_bytes=os.urandom(64))
        joiner.start()
        joiner.receive(pairing.encode(pairing.Answer(element, mac, name[:100])))

    only_project_errors("pairing exchange", feed)


@FUZZ
@given(st.binary(max_size=1200), st.lists(st.text(max_size=40), max_size=3))
def test_fuzz_mdns_txt(record, host_ips):
    only_project_errors("mdns.parse_txt", lambda: parse_txt(record, host_ips))


# --- placement: calls for bids, bids, awards, reports --------------------------------------------


def auction_messages() -> st.SearchStrategy[bytes]:
    kinds = list(auction._KINDS.items())  # noqa: SLF001

    def wrap(pair: tuple[type, str], payload: bytes) -> bytes:
        cls, kind = pair
        return codec.encode({"k": kind, "e": signed.sign(kind, payload, KEY)})

    payloads = st.one_of(st.binary(max_size=200), cbor_values.map(codec.encode),
                         maps_with(sorted({n for cls, _ in kinds for n in names(cls)})))
    return st.builds(wrap, st.sampled_from(kinds), payloads)


@FUZZ
@given(st.one_of(inputs(["k", "e"]), auction_messages()))
def test_fuzz_auction_messages(data):
    only_project_errors("auction.decode", lambda: auction.decode(data, now=NOW))


# --- handoff: protocol messages, offers (signed headers), sealed bodies, files at rest ---------


HANDOFF_FIELDS = ["t", "have", "bulk", "token", "reason", "detail", "via", "size", "agent", "gen", "header", "status",
                  "decision", "sections", "done"]
HEADER_FIELDS = ["v", "agent", "gen", "sender", "recipient", "rkey", "skey", "auction", "issued", "expires", "suite",
                 "wkey", "ekey", "chunk", "sections", "module", "kv_model"]


@FUZZ
@given(st.one_of(inputs(HANDOFF_FIELDS),
                 st.builds(lambda tag, rest: codec.encode({"t": tag, **rest}), st.integers(0, 14) | st.text(max_size=8),
                           st.dictionaries(st.sampled_from(HANDOFF_FIELDS[1:]), cbor_values, max_size=5))))
def test_fuzz_handoff_messages(data):
    only_project_errors("handoff.decode", lambda: handoff_proto.decode(data))


@FUZZ
@given(st.one_of(inputs(HEADER_FIELDS), signed_maps(snap.HEADER_KIND, HEADER_FIELDS)))
def test_fuzz_offer_headers(peers, data):
    _, b = peers
    only_project_errors("snapshot.verify_header", lambda: snap.verify_header(
        data, me=b.peer_id, my_sealing_key=b.sealing_public, now=NOW))


@FUZZ
@given(st.binary(max_size=1500), st.integers(1, 4))
def test_fuzz_sealed_containers(peers, data, pieces):
    _, b = peers

    def read() -> None:
        reader = snap.SnapshotReader(sealing_key=b.sealing_key, me=b.peer_id, now=NOW, mode="open")
        step = max(1, len(data) // pieces)
        for i in range(0, len(data), step):
            reader.receive_data(data[i : i + step])
        reader.close()

    only_project_errors("snapshot.SnapshotReader", read)


@pytest.fixture(scope="module")
def sealed(peers):
    a, b = peers
    return snap.seal_snapshot(
        signing_key=a.signing_key, sender_sealing_key=a.sealing_public, recipient=b.peer_id, recipient_key=b.sealing_public,
        agent_id="fuzz", generation=1, sections=[("meta", b"m"), ("journal", os.urandom(3000))], now=NOW, ttl_s=3600.0,
        data_key=os.urandom(32), chunk_size=snap.MIN_CHUNK,
    )


@FUZZ
@given(st.binary(max_size=2500), st.integers(0, 3))
def test_fuzz_sealed_bodies_after_a_valid_header(peers, sealed, body, flips):
    _, b = peers

    def read() -> None:
        reader = snap.SnapshotReader(sealing_key=b.sealing_key, me=b.peer_id, now=NOW, mode="open")
        reader.receive_data(sealed.container_prefix())
        reader.receive_data(body)
        reader.close()

    only_project_errors("snapshot.SnapshotReader.body", read)


@FUZZ
@given(st.one_of(st.binary(max_size=400), st.binary(max_size=300).map(lambda b: snap.MAGIC + len(b).to_bytes(4, "big") + b),
                 st.binary(max_size=300).map(lambda b: snap.MAGIC + b)))
def test_fuzz_sealed_files_at_rest(data):
    only_project_errors("handoff.read_container_header", lambda: net_handoff.read_container_header(io.BytesIO(data)))


@FUZZ
@given(st.dictionaries(st.sampled_from(["meta", "journal", "image", "vfs", "kv", "module", "tool-ab12"]),
                       st.one_of(st.binary(max_size=200), cbor_values.map(codec.encode)), max_size=6))
def test_fuzz_opened_sections(peers, sealed, sections):
    """What a validly signed but malicious sender could put in the sections it sealed."""
    _, b = peers
    header = snap.verify_header(sealed.header_blob, me=b.peer_id, my_sealing_key=b.sealing_public, now=NOW)
    only_project_errors("snapshots.from_sections", lambda: from_sections(sections, header))


# --- agents at rest and in snapshots: journals, snapshots, family bundles -----------------------------


@FUZZ
@given(inputs(["v", "entries", "labels", "rollbacks", "t", "d", "r", "o"]))
def test_fuzz_journals(data):
    only_project_errors("Journal.decode", lambda: Journal.decode(data, limit=1 << 20))


@FUZZ
@given(inputs(["v", "agent_id", "parent_id", "module_sha256", "module", "journal", "args", "env", "vfs", "image",
               "status", "tools", "labels"]))
def test_fuzz_agent_snapshots(data):
    only_project_errors("AgentSnapshot.from_bytes", lambda: AgentSnapshot.from_bytes(data, max_size=1 << 20))


@FUZZ
@given(inputs(["v", "agents", "family"]))
def test_fuzz_family_bundles(data):
    only_project_errors("bundle.decode_family", lambda: decode_family(data, max_size=1 << 20))


# --- KV blobs (from peers, in snapshots) ----------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=600), st.binary(max_size=400).map(lambda b: kvblob.sign_blob(b, KEY))))
def test_fuzz_kv_blobs(data):
    def check() -> None:
        inner = kvblob.open_signed_blob(data, max_size=1 << 16)
        kvblob.unpack_blob(inner, model_sha256="0" * 64, engine="llama.cpp", tokens=[1, 2, 3], max_state=1 << 16)

    only_project_errors("kvblob", check)


# --- the results relay (/meshagent/result/1) -------------------------------------------------------------


RESULT_FIELDS = ["agent_id", "parent_id", "status", "exit_code", "stdout", "stderr", "host_calls", "error", "children"]
NOTICE_FIELDS = ["agent_id", "generation", "holder", "parent_id", "children"]


@FUZZ
@given(st.one_of(inputs(RESULT_FIELDS + NOTICE_FIELDS + ["t", "result"]),
                 st.dictionaries(st.sampled_from(RESULT_FIELDS), cbor_values, max_size=9).map(
                     lambda r: codec.encode({"t": "result", "result": r})),
                 st.dictionaries(st.sampled_from(NOTICE_FIELDS), cbor_values, max_size=5).flatmap(
                     lambda m: st.sampled_from(["custody", "children", "fetch"]).map(lambda t: codec.encode({**m, "t": t})))))
def test_fuzz_results_relay_messages(data):
    def decode() -> None:
        msg = results_proto.decode_request(data)
        if isinstance(msg, results_proto.ResultReport):
            assert isinstance(msg.result.stdout, bytes) and len(msg.result.children) <= results_proto.MAX_CHILDREN

    only_project_errors("results_relay", decode)
    only_project_errors("results_relay.reply", lambda: results_proto.decode_reply(data))
    only_project_errors("results_relay.fetch_reply", lambda: results_proto.decode_fetch_reply(data))


# --- options text from the guest ----------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")))
def test_fuzz_llm_options_text(text):
    def parse() -> None:
        out = parse_llm_options(text, LlmOptions())
        assert out is None or isinstance(out, LlmOptions)

    only_project_errors("parse_llm_options", parse)
