"""Fixtures for lab tests: network namespaces that are always torn down."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import pytest

from labnet import Lab

MakeLab = Callable[..., Lab]


@pytest.fixture
def make_lab() -> Iterator[MakeLab]:
    """``make_lab(n, profiles=(...))`` brings up a lab; every lab made is removed afterwards.

    Skips the test (with the reason) when not root or without ``ip netns``.
    """
    labs: list[Lab] = []

    def make(n: int, *, profiles: Sequence[str] = ()) -> Lab:
        lab = Lab(n, profiles=profiles, prefix=f"mt{os.getpid() % 100000}{len(labs)}")
        labs.append(lab)  # registered before it exists: a half-made lab is removed too
        return lab.__enter__()

    try:
        yield make
    finally:
        errors = []
        for lab in labs:
            try:
                lab.down()
            except RuntimeError as exc:
                errors.append(str(exc))
        if errors:
            pytest.fail("lab teardown failed: " + "; ".join(errors))
