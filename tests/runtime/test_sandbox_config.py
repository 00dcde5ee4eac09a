"""The ``[sandbox]`` keys that bound what an agent can make a node spend are checked when the config loads."""

from __future__ import annotations

import pytest

from meshagent.config import load_config
from meshagent.errors import ConfigError


@pytest.mark.parametrize("line", [
    "wall_clock_s = 0", "wall_clock_s = -5", "wall_clock_s = inf", "wall_clock_s = nan", "wall_clock_s = true",
    "owner_slots = 0", "files_bytes = 0", "tool_memory_bytes = -1", "tool_fuel = 0", "max_instances = 0",
    "reserved_slots = -1", "log_bytes = -1", "fuel = 1.5",
])
def test_limits_that_cannot_work_are_refused(tmp_path, line):
    path = tmp_path / "c.toml"
    path.write_text(f"[sandbox]\n{line}\n")
    with pytest.raises(ConfigError, match=r"\[sandbox\] " + line.split()[0]):
        load_config(path)


def test_the_new_limits_load(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[sandbox]\nwall_clock_s = 30\nowner_slots = 1\nreserved_slots = 0\nfiles_bytes = 1048576\n"
                    "tool_memory_bytes = 8388608\ntool_fuel = 1000\nlog_bytes = 0\n")
    limits = load_config(path).sandbox
    assert (limits.wall_clock_s, limits.owner_slots, limits.reserved_slots, limits.files_bytes) == (30, 1, 0, 1 << 20)
    assert (limits.tool_memory_bytes, limits.tool_fuel, limits.log_bytes) == (8 << 20, 1000, 0)
