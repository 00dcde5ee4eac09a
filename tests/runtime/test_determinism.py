"""The engine is configured for determinism: canonical NaNs, no threads."""

from __future__ import annotations

import pytest
import wasmtime

from meshagent.errors import ModuleError
from meshagent.runtime.modules import ModuleCache
from meshagent.runtime.sandbox import KNOWN_IMPORTS, Agent
from tests.runtime.helpers import new_snapshot

NAN_WAT = """
(module
  (memory (export "memory") 1)
  (global $zero (mut f32) (f32.const 0))
  (func (export "nan_bits") (result i32)
    (i32.reinterpret_f32 (f32.div (global.get $zero) (global.get $zero))))
  (func (export "neg_nan_bits") (result i32)
    (i32.reinterpret_f32 (f32.add (f32.const -nan:0x200001) (global.get $zero)))))
"""


def test_nans_are_canonical(modules: ModuleCache) -> None:
    agent = Agent(new_snapshot(modules, wasmtime.wat2wasm(NAN_WAT)), modules=modules)
    assert agent.run().status == "idle"
    assert agent.invoke("nan_bits") == 0x7FC00000
    assert agent.invoke("neg_nan_bits") == 0x7FC00000  # payload and sign are not host-dependent


def test_threads_are_off(modules: ModuleCache) -> None:
    shared = '(module (memory (export "memory") 1 1 shared) (func (export "_start")))'
    with pytest.raises(ModuleError, match="threads must be enabled"):
        modules.load(wasmtime.wat2wasm(shared), KNOWN_IMPORTS)
