import pytest

from simulations.run import QUICK, Results, run_all


@pytest.fixture(scope="session")
def quick() -> Results:
    """The quick run, once per test session (a few seconds)."""
    return run_all(QUICK, mode="quick")
