"""Sealed snapshot format v1: round trips, and every check before any decoding."""

from __future__ import annotations

import os

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings, strategies as st

from meshagent.errors import (
    DecompressionBomb,
    ExpiredError,
    FrameTooLarge,
    MeshError,
    SealError,
    StaleError,
    WrongRecipient,
)
from meshagent.protocol import codec
from meshagent.protocol import snapshot as snap
from meshagent.protocol.signed import peer_id_from_public_key

NOW = 1_000_000.0


class Peer:
    def __init__(self) -> None:
        self.signing = Ed25519PrivateKey.generate()
        self.sealing = X25519PrivateKey.generate()
        self.peer_id = peer_id_from_public_key(self.signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        self.sealing_public = self.sealing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@pytest.fixture(scope="module")
def alice() -> Peer:
    return Peer()


@pytest.fixture(scope="module")
def bob() -> Peer:
    return Peer()


def seal(sender: Peer, recipient: Peer, sections, *, generation=3, ttl=60.0, chunk=snap.MIN_CHUNK, **kw):
    return snap.seal_snapshot(
        signing_key=sender.signing,
        sender_sealing_key=sender.sealing_public,
        recipient=recipient.peer_id,
        recipient_key=recipient.sealing_public,
        agent_id="agent-1",
        generation=generation,
        sections=sections,
        now=NOW,
        ttl_s=ttl,
        data_key=os.urandom(32),
        chunk_size=chunk,
        **kw,
    )


def reader(me: Peer, **kw) -> snap.SnapshotReader:
    kw.setdefault("now", NOW + 1)
    return snap.SnapshotReader(sealing_key=me.sealing, me=me.peer_id, **kw)


def open_all(me: Peer, blob: bytes, **kw) -> dict[str, bytes]:
    """What a receiver does: authenticate everything first, then open."""
    r = reader(me, mode="verify", **kw)
    r.receive_data(blob)
    r.close()
    r = reader(me, mode="open", **kw)
    out: dict[str, bytearray] = {}
    for event in r.receive_data(blob):
        if isinstance(event, snap.SectionData):
            out.setdefault(event.section, bytearray()).extend(event.data)
    r.close()
    return {k: bytes(v) for k, v in out.items()}


SECTIONS = [("meta", b"owner=me"), ("journal", b"j" * 10_000 + os.urandom(5000)), ("empty", b"")]


def test_round_trip_multi_chunk(alice, bob):
    sealed = seal(alice, bob, SECTIONS)
    blob = b"".join(sealed.container())
    assert open_all(bob, blob) == {"meta": b"owner=me", "journal": SECTIONS[1][1], "empty": b""}
    assert sealed.header.raw_size == sum(len(d) for _, d in SECTIONS)


def test_fed_one_byte_at_a_time(alice, bob):
    blob = b"".join(seal(alice, bob, SECTIONS).container())
    r = reader(bob, mode="open")
    got = bytearray()
    for i in range(len(blob)):
        for event in r.receive_data(blob[i : i + 1]):
            if isinstance(event, snap.SectionData) and event.section == "journal":
                got += event.data
    r.close()
    assert bytes(got) == SECTIONS[1][1]


def test_skipped_sections_are_absent_and_expected_absent(alice, bob):
    sealed = seal(alice, bob, [("module", b"\0asm" * 100), ("journal", b"x")])
    blob = b"".join(sealed.container(skip=frozenset({"module"})))
    assert open_all(bob, blob, skip=frozenset({"module"})) == {"journal": b"x"}
    with pytest.raises(SealError):
        open_all(bob, blob)  # a reader that expects the module finds the wrong chunk


def test_sender_can_open_its_escrow_copy(alice, bob):
    blob = b"".join(seal(alice, bob, SECTIONS).container())
    assert open_all(alice, blob, as_sender=True)["meta"] == b"owner=me"
    with pytest.raises(WrongRecipient):
        open_all(alice, blob)  # but not as the recipient


@pytest.fixture
def counters(monkeypatch):
    """Count every CBOR decode (with its input) and every decompressor use."""
    calls: dict[str, list[bytes]] = {"decode": [], "decompress": []}
    real_decode = codec.decode
    real_dctx = zstandard.ZstdDecompressor
    real_fcs = zstandard.frame_content_size

    def decode(data, **kw):
        calls["decode"].append(bytes(data))
        return real_decode(data, **kw)

    def dctx(*a, **kw):
        calls["decompress"].append(b"")
        return real_dctx(*a, **kw)

    def fcs(data):
        calls["decompress"].append(bytes(data))
        return real_fcs(data)

    monkeypatch.setattr(codec, "decode", decode)
    monkeypatch.setattr(zstandard, "ZstdDecompressor", dctx)
    monkeypatch.setattr(zstandard, "frame_content_size", fcs)
    return calls


def test_every_single_byte_flip_is_refused_before_decompressing_or_decoding(alice, bob, counters):
    sealed = seal(alice, bob, [("meta", b"m" * 40), ("journal", b"j" * 300)])
    blob = b"".join(sealed.container())
    header_end = len(sealed.container_prefix())
    payload = codec.encode(sealed.header.to_wire())
    # the unmodified snapshot does reach both decoders (so the counters are live)
    open_all(bob, blob)
    assert counters["decode"] and counters["decompress"]
    for pos in range(len(blob)):
        for mask in (0x01, 0x80):
            counters["decode"].clear()
            counters["decompress"].clear()
            flipped = bytearray(blob)
            flipped[pos] ^= mask
            with pytest.raises(MeshError):
                open_all(bob, bytes(flipped))
            assert counters["decompress"] == [], f"decompressed with byte {pos} flipped"
            if pos < header_end:
                assert counters["decode"] == [], f"decoded CBOR with header byte {pos} flipped"
            else:
                # only the signed, unmodified header was decoded — after its signature passed
                assert all(d == payload for d in counters["decode"]), pos


def test_sealed_for_another_peer_cannot_be_opened(alice, bob):
    carol = Peer()
    blob = b"".join(seal(alice, bob, SECTIONS).container())
    with pytest.raises(WrongRecipient):
        open_all(carol, blob)
    # Carol pretending to be Bob (right peer id, her own key) cannot unwrap the data key either
    r = snap.SnapshotReader(sealing_key=carol.sealing, me=bob.peer_id, now=NOW)
    with pytest.raises(WrongRecipient):
        r.receive_data(blob)
    with pytest.raises(WrongRecipient):
        snap.unwrap_data_key(seal(alice, bob, SECTIONS).header, carol.sealing)


@pytest.mark.parametrize("highest", [3, 4, 9])
def test_older_or_equal_generation_is_refused(alice, bob, highest):
    sealed = seal(alice, bob, SECTIONS, generation=3)
    with pytest.raises(StaleError):
        snap.verify_header(sealed.header_blob, me=bob.peer_id, my_sealing_key=bob.sealing_public, now=NOW,
                           min_generation=highest + 1)


def test_expired_and_future_headers_are_refused(alice, bob):
    sealed = seal(alice, bob, SECTIONS, ttl=10.0)
    with pytest.raises(ExpiredError):
        snap.verify_header(sealed.header_blob, me=bob.peer_id, my_sealing_key=bob.sealing_public, now=NOW + 10.0)
    with pytest.raises(ExpiredError):
        snap.verify_header(sealed.header_blob, me=bob.peer_id, my_sealing_key=bob.sealing_public, now=NOW - 3600)


def test_too_large_is_refused_on_the_header_alone(alice, bob, counters):
    sealed = seal(alice, bob, [("image", b"\0" * 100_000)])
    r = reader(bob, limits=snap.Limits(max_raw_bytes=50_000))
    with pytest.raises(FrameTooLarge):
        r.receive_data(sealed.container_prefix())  # the body is never needed
    assert counters["decompress"] == []


def test_truncated_body_is_not_complete(alice, bob):
    blob = b"".join(seal(alice, bob, SECTIONS).container())
    r = reader(bob)
    events = r.receive_data(blob[:-5])
    assert not any(isinstance(e, snap.SnapshotComplete) for e in events)
    with pytest.raises(SealError):
        r.close()


def test_trailing_bytes_are_refused(alice, bob):
    blob = b"".join(seal(alice, bob, SECTIONS).container())
    with pytest.raises(SealError):
        reader(bob).receive_data(blob + b"\0\0\0\0")


def test_oversized_chunk_frame_is_refused_before_it_is_buffered(alice, bob):
    sealed = seal(alice, bob, SECTIONS)
    r = reader(bob)
    r.receive_data(sealed.container_prefix())
    with pytest.raises(FrameTooLarge):
        r.receive_data((1 << 30).to_bytes(4, "big"))


def _bomb_chunk(sealed: snap.SealedSnapshot, piece: bytes) -> bytes:
    """A validly sealed chunk 0 of section 0 carrying ``piece`` (the sender is the attacker)."""
    digest = snap.header_digest(sealed.header_blob)
    n = snap.chunk_count(sealed.header.sections[0].size, sealed.header.chunk_size)
    aad = digest + (0).to_bytes(4, "big") + (0).to_bytes(8, "big") + (b"\x01" if n == 1 else b"\x00")
    ct = ChaCha20Poly1305(sealed.data_key).encrypt((0).to_bytes(4, "big") + (0).to_bytes(8, "big"), piece, aad)
    return len(ct).to_bytes(4, "big") + ct


def test_decompression_bomb_is_stopped_at_the_declared_size(alice, bob, monkeypatch):
    sealed = seal(alice, bob, [("journal", b"x" * 16384)], chunk=16384)
    # 256 MiB of zeros in an ~8 KB frame that does not state its content size
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (256 << 20))
    assert len(bomb) < 16384
    produced: list[int] = []
    real = zstandard.ZstdDecompressor

    class Counting:
        def __init__(self, *a, **kw):
            self._d = real(*a, **kw)

        def stream_reader(self, *a, **kw):
            inner = self._d.stream_reader(*a, **kw)

            class R:
                def read(self, n=-1):
                    out = inner.read(n)
                    produced.append(len(out))
                    return out

            return R()

    monkeypatch.setattr(zstandard, "ZstdDecompressor", Counting)
    r = reader(bob, mode="open")
    r.receive_data(sealed.container_prefix())
    with pytest.raises(DecompressionBomb):
        r.receive_data(_bomb_chunk(sealed, bomb))
    assert sum(produced) <= 16384 + 1


def test_piece_that_lies_about_its_content_size_is_refused(alice, bob):
    sealed = seal(alice, bob, [("journal", b"x" * 4096)])
    lie = zstandard.ZstdCompressor(write_content_size=True).compress(b"y" * 8000)
    r = reader(bob, mode="open")
    r.receive_data(sealed.container_prefix())
    with pytest.raises(DecompressionBomb):
        r.receive_data(_bomb_chunk(sealed, lie))


def test_hybrid_post_quantum_suite_round_trip():
    from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

    keys = {}
    for name in ("a", "b"):
        p = Peer()
        m = MLKEM768PrivateKey.generate()
        keys[name] = (p, snap.hybrid_private_key(m, p.sealing), snap.hybrid_public_bytes(m, p.sealing))
    (a, _, a_pub), (b, b_priv, b_pub) = keys["a"], keys["b"]
    sealed = snap.seal_snapshot(
        signing_key=a.signing, sender_sealing_key=a_pub, recipient=b.peer_id, recipient_key=b_pub, agent_id="pq",
        generation=1, sections=SECTIONS, now=NOW, ttl_s=60, data_key=os.urandom(32), chunk_size=snap.MIN_CHUNK,
        suite=snap.SUITE_HYBRID,
    )
    blob = b"".join(sealed.container())
    r = snap.SnapshotReader(sealing_key=b_priv, sealing_public=b_pub, me=b.peer_id, now=NOW, mode="open")
    got = b"".join(e.data for e in r.receive_data(blob) if isinstance(e, snap.SectionData) and e.section == "journal")
    assert got == SECTIONS[1][1] and r.header.suite == snap.SUITE_HYBRID
    # the X25519 half alone does not open it
    with pytest.raises(MeshError):
        snap.SnapshotReader(sealing_key=b.sealing, sealing_public=b_pub, me=b.peer_id, now=NOW).receive_data(blob)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_reader_only_project_errors(alice, bob, data):
    r = reader(bob, mode="open")
    try:
        r.receive_data(data)
        r.close()
    except MeshError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["v", "agent", "gen", "sender", "recipient", "rkey", "skey", "auction", "issued",
                                        "expires", "suite", "wkey", "ekey", "chunk", "sections", "module", "kv_model"]),
                       st.none() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=40)
                       | st.lists(st.lists(st.text(max_size=4) | st.integers(), max_size=3), max_size=3)))
def test_fuzz_signed_header_fields_only_project_errors(alice, bob, fields):
    from meshagent.protocol import signed

    blob = signed.sign(snap.HEADER_KIND, codec.encode(fields), alice.signing)
    try:
        snap.verify_header(blob, me=bob.peer_id, my_sealing_key=bob.sealing_public, now=NOW)
    except MeshError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 3))
def test_fuzz_body_after_a_valid_header_only_project_errors(alice, bob, body, split):
    sealed = seal(alice, bob, SECTIONS)
    r = reader(bob, mode="open")
    r.receive_data(sealed.container_prefix())
    try:
        # random chunk frames, fed in a few pieces
        step = max(1, len(body) // (split + 1))
        for i in range(0, len(body), step):
            r.receive_data(body[i : i + step])
        r.close()
    except MeshError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_fuzz_offer_header_blobs_only_project_errors(alice, bob, payload, wrap):
    """An Offer carries a header envelope: random bytes, or a validly signed envelope of random payload."""
    from meshagent.protocol import signed

    blob = signed.sign(snap.HEADER_KIND, payload, alice.signing) if wrap else payload
    try:
        snap.verify_header(blob, me=bob.peer_id, my_sealing_key=bob.sealing_public, now=NOW)
    except MeshError:
        pass
