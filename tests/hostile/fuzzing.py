"""Shared pieces of the fuzz tests: example counts, settings, structured CBOR inputs."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from meshagent.errors import MeshError
from meshagent.protocol import codec
from tests.hostile.conftest import EXAMPLES, FUZZ_EXAMPLES, MAX_EXAMPLE_BYTES, PEAK_BYTES, UNEXPECTED

__all__ = ["FUZZ", "cbor_values", "inputs", "only_project_errors"]

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

_TRACE_EVERY = 20

scalars = (st.none() | st.booleans() | st.integers(-(1 << 64), 1 << 64) | st.floats() | st.text(max_size=12)
           | st.binary(max_size=48))
cbor_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8) | st.integers(-3, 40), inner, max_size=6), max_leaves=24)


def maps_with(keys: list[str]) -> st.SearchStrategy[bytes]:
    """CBOR maps whose keys are the decoder's own field names, with random values (gets past the first checks)."""
    return st.dictionaries(st.sampled_from(keys), cbor_values, max_size=len(keys)).map(codec.encode)


def inputs(keys: list[str] | None = None, max_size: int = 800) -> st.SearchStrategy[bytes]:
    """Raw random bytes, random CBOR documents and (with ``keys``) maps of the decoder's field names."""
    parts = [st.binary(max_size=max_size), cbor_values.map(codec.encode)]
    if keys:
        parts.append(maps_with(keys))
    return st.one_of(*parts)


def only_project_errors(name: str, fn: Callable[[], object]) -> None:
    """Run one example of target ``name``: a MeshError is a refusal; anything else is a bug.

    Every ``_TRACE_EVERY``-th example runs under tracemalloc: the Python memory it
    allocated at its peak must stay under ``MAX_EXAMPLE_BYTES`` (a decoder that
    believes a declared length would allocate it).
    """
    EXAMPLES[name] += 1
    traced = EXAMPLES[name] % _TRACE_EVERY == 1 and not tracemalloc.is_tracing()
    if traced:
        tracemalloc.start()
    try:
        fn()
    except MeshError:
        pass
    except Exception:
        UNEXPECTED[name] += 1
        raise
    finally:
        if traced:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            PEAK_BYTES[name] = max(PEAK_BYTES[name], peak)
    if traced:
        assert peak < MAX_EXAMPLE_BYTES, f"{name}: one example allocated {peak} bytes at its peak"
