"""Shared test configuration.

Hypothesis profiles (select with HYPOTHESIS_PROFILE):
- ``ci`` (default): few examples, derandomised, so the default run is fast and repeatable;
- ``dev``: Hypothesis' defaults;
- ``deep``: 10,000 examples per property, for deliberate long runs.
"""

import contextlib
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", deadline=None)
settings.register_profile(
    "deep",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread(request):
    """One torch thread in every test module that binds ``torch`` (a module's own
    ``_one_thread`` fixture overrides this one). The test machine is shared: one thread
    is much faster than two contending ones, and the results do not depend on the count.
    """
    torch = getattr(request.module, "torch", None)
    if torch is None or not hasattr(torch, "set_num_threads"):
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@contextlib.contextmanager
def float64_default():
    """Torch's default dtype float64 inside (restored after, also on error): modules built
    inside have float64 draws (``.double()`` would cast float32 ones). Test modules use it
    as ``from conftest import float64_default as _float64``.
    """
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@pytest.fixture
def _float64():
    """The :func:`float64_default` context manager, for tests that take it as a fixture."""
    return float64_default
