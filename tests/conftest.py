"""Shared test configuration.

Hypothesis profiles (select with HYPOTHESIS_PROFILE):
- ``ci`` (default): few examples, derandomised, so the default run is fast and repeatable;
- ``dev``: Hypothesis' defaults;
- ``deep``: 10,000 examples per property, for deliberate long runs.
"""

import os

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
