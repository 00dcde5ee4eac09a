import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshagent.protocol.advert import Advert, Hardware, ModelAd, bind_sealing_key
from meshagent.protocol.signed import peer_id_from_public_key


def make_key():
    return Ed25519PrivateKey.generate()


def make_advert(key, *, seq=1, now=1000.0, ttl=12.0, instance=b"i" * 16, started_at=900.0, **kw):
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sealing = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    fields = dict(
        peer_id=peer_id_from_public_key(pub),
        seq=seq,
        issued_at=now,
        expires_at=now + ttl,
        name="node",
        addrs=("/ip4/127.0.0.1/tcp/4737",),
        hardware=Hardware(arch="x86_64", os="Linux", cpu_model="cpu", cpu_cores=2, ram_total=8 << 30, ram_free=4 << 30),
        sealing_key=sealing,
        sealing_key_sig=bind_sealing_key(sealing, key),
        instance=instance,
        started_at=started_at,
        models=(ModelAd(name="tiny", sha256="ab" * 32, size_bytes=11 << 20, tags=("size=small",)),),
    )
    fields.update(kw)
    return Advert(**fields)


@pytest.fixture
def key():
    return make_key()
