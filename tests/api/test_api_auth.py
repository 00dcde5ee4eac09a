"""The API beyond loopback: a bearer token from the data dir (mode 0600), OpenAI-style 401 without it."""

from __future__ import annotations

import stat
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from meshagent.node.api.auth import is_loopback, load_or_create_token
from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess
from tests.conftest import MODEL_CACHE


def test_token_file_is_private_and_stable(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path, "")
    assert stat.S_IMODE((tmp_path / "api.token").stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path, "") == token
    assert load_or_create_token(tmp_path, "configured") == "configured"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


@pytest.mark.timeout(120)
def test_lan_bind_requires_the_token(tmp_path: Path) -> None:
    data = tmp_path / "pi"
    write_device_config(data, "pi", MODEL_CACHE)
    with (data / "config.toml").open("a") as f:
        f.write('\n[api]\nbind = "0.0.0.0"\nport = 0\n')
    node = NodeProcess(data, name="pi").start()
    try:
        info = node.call("api")
        assert info["auth"] and info["token_file"] == str(data / "api.token")
        token = Path(info["token_file"]).read_text().strip()
        url = info["url"].replace("0.0.0.0", "127.0.0.1")

        with pytest.raises(openai.AuthenticationError) as refused:
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"
        with pytest.raises(urllib.error.HTTPError) as events:
            urllib.request.urlopen(url + "/api/state", timeout=10)
        assert events.value.code == 401

        models = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0).models.list()
        assert [m.id for m in models] == ["tiny-chat"]
        with urllib.request.urlopen(f"{url}/api/events?token={token}", timeout=10) as ok:  # the dashboard's stream
            assert ok.status == 200 and ok.readline() == b"event: state\n"
        with urllib.request.urlopen(url + "/", timeout=10) as page:  # the page itself holds no data
            assert b"meshagent" in page.read()
    finally:
        node.stop()
