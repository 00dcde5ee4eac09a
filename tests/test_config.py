import dataclasses
import tomllib
from pathlib import Path

import pytest

from meshagent.config import ApiConfig, Config, ModelConfig, NetConfig, NodeConfig, SandboxLimits, load_config
from meshagent.errors import ConfigError

CONFIG = Path(__file__).resolve().parent.parent / "config"


def test_default_toml_documents_every_key_with_its_default():
    raw = tomllib.loads((CONFIG / "default.toml").read_text())
    for section, cls in (("node", NodeConfig), ("net", NetConfig), ("sandbox", SandboxLimits), ("api", ApiConfig)):
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(raw[section]) == names, f"[{section}] in default.toml differs from {cls.__name__}"
        default = cls()
        for key, value in raw[section].items():
            expected = getattr(default, key)
            assert (tuple(value) if isinstance(value, list) else value) == expected, f"[{section}] {key}"
    text = (CONFIG / "default.toml").read_text()
    for f in dataclasses.fields(ModelConfig):
        assert f"# {f.name} = " in text, f"[[models]] key {f.name} is not documented"


@pytest.mark.parametrize("path", sorted(CONFIG.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), Config)


def test_unknown_key_and_bad_profile(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[node]\nnmae = 'x'\n")
    with pytest.raises(ConfigError, match="unknown key 'nmae'"):
        load_config(p)
    p.write_text("[node]\nprofile = 'toaster'\n")
    with pytest.raises(ConfigError, match="profile"):
        load_config(p)
    p.write_text("[node\n")
    with pytest.raises(ConfigError):
        load_config(p)


def test_sealing_suite(tmp_path):
    assert Config().net.sealing_suite == "x25519"
    p = tmp_path / "c.toml"
    p.write_text('[net]\nsealing_suite = "hybrid"\n')
    assert load_config(p).net.sealing_suite == "hybrid"
    p.write_text('[net]\nsealing_suite = "rsa"\n')
    with pytest.raises(ConfigError, match="sealing_suite"):
        load_config(p)


@pytest.mark.parametrize("line", ["reputation_half_life_s = 0", "advert_interval_s = -1", "advert_ttl_s = 0.0",
                                  "report_grace_s = -5"])
def test_timings_that_cannot_work_are_refused(tmp_path, line):
    p = tmp_path / "c.toml"
    p.write_text(f"[node]\n{line}\n")
    with pytest.raises(ConfigError, match=line.split()[0]):
        load_config(p)
    p.write_text("[node]\nreputation_half_life_s = 0.5\nreport_grace_s = 0\n")
    assert load_config(p).node.reputation_half_life_s == 0.5
