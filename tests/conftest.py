"""Shared test configuration.

Hypothesis profiles (select with HYPOTHESIS_PROFILE):
- ``ci`` (default): few examples, derandomised, so the default run is fast and repeatable;
- ``dev``: Hypothesis' defaults;
- ``deep``: 10,000 examples per property, for deliberate long runs.
"""

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
