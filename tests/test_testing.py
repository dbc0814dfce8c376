"""Tests of ramodel.testing: strategies and the property test of (user) families."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ramodel.mappings as mp
from ramodel.testing import assert_family_invariants, family_params, mappings

BUILTINS = ("identity", "none", "orthogonal", "permutation", "block_orthogonal", "sparse_unipotent", "correlation")


@pytest.fixture
def user_family():
    """Register user families for one test and remove them afterwards."""
    names = []

    def register(name, **kwargs):
        def decorator(function):
            mp.register(name, replace=True, **kwargs)(function)
            names.append(name)
            return function

        return decorator

    yield register
    for name in names:
        if name in mp.families():
            mp.unregister(name)


# ------------------------------------------------------------------------- strategies


@pytest.mark.parametrize("family", BUILTINS + ("scaled(correlation)",))
def test_family_params_are_valid_and_complete(family):
    fam = mp.get(family)

    @given(family_params(family))
    def check(params):
        assert set(params) == set(fam.params)
        assert fam.resolve_params(params) == params

    check()


@given(family_params("correlation", kind="block", block=5))
def test_family_params_respects_fixed_values_and_constraints(params):
    assert params["kind"] == "block" and params["block"] == 5
    assert 1 + 4 * params["rho"] > 0  # the block-equicorrelation bound
    assert -1 < params["rho"] < 1


def test_family_params_rejects_invalid_fixed_values():
    with pytest.raises(ValueError, match="density must be in"):
        family_params("sparse_unipotent", density=3.0)
    with pytest.raises(TypeError, match="unknown parameter"):
        family_params("orthogonal", density=0.5)
    with pytest.raises(ValueError, match="unknown mapping family"):
        family_params("orthogonl")


@given(mappings("orthogonal", width=st.integers(1, 12)))
def test_mappings_draws_matrices(M):
    n = M.shape[0]
    assert M.shape == (n, n) and M.dtype == np.float64 and 1 <= n <= 12
    assert np.allclose(M.T @ M, np.eye(n), atol=1e-13)


@given(mappings("sparse_unipotent", width=6, dtype="float32", density=1.0))
def test_mappings_fixed_width_dtype_and_params(M):
    assert M.shape == (6, 6) and M.dtype == np.float32
    assert np.count_nonzero(M) == 21  # density 1: the full triangle, 6 + 15


@given(mappings("permutation", width=5, seed=3, signed=True))
def test_mappings_fixed_seed(M):
    assert np.array_equal(M, mp.get("permutation")(5, seed=3, signed=True))


def test_mappings_validates_width():
    with pytest.raises(ValueError, match="width must be >= 1"):
        mappings("identity", width=0)


# ------------------------------------------------------------------- user families


def test_user_reflection_family(user_family):
    @user_family("reflection", attributes=("orthogonal", "determinant_pm1", "sparse(1)", "unit_modulus_spectrum"))
    def reflection(width, rng):
        return np.diag(rng.choice([-1.0, 1.0], size=width))

    assert_family_invariants("reflection", max_examples=15)
    assert_family_invariants("reflection", max_examples=5, dtype="float32")


def test_user_block_rotation_family_with_a_parameter(user_family):
    @user_family(
        "rotations",
        attributes=(
            "orthogonal", "unit_modulus_spectrum", "spectral_norm_one", "frobenius_sqrt_n", "determinant_pm1", "sparse(2)"
        ),
        params={"angle": mp.Param.real(0.3, low=-math.pi, high=math.pi)},
    )
    def rotations(width, rng, *, angle):
        M = np.eye(width)
        for i in range(0, width - 1, 2):
            c, s = math.cos(angle), math.sin(angle)
            M[i : i + 2, i : i + 2] = [[c, -s], [s, c]]
        return M

    assert_family_invariants("rotations", max_examples=15)
    assert_family_invariants("scaled(rotations)", max_examples=5)


def test_user_family_with_structured_form(user_family):
    @user_family("reversal", attributes=("orthogonal", "sparse(1)", "determinant_pm1"))
    def reversal(width, rng):
        return mp.PermutationMap(np.arange(width)[::-1].copy(), np.ones(width))

    assert_family_invariants("reversal", max_examples=10)


def test_failure_message_names_family_attribute_width_seed_and_deviation(user_family):
    @user_family("doubled", attributes=("sparse(1)", "orthogonal"))
    def doubled(width, rng):
        return 2.0 * np.eye(width)

    with pytest.raises(AssertionError) as info:
        assert_family_invariants("doubled", max_examples=5)
    message = str(info.value)
    for part in ("family 'doubled'", "attribute 'orthogonal'", "width=", "seed=", "deviation 3.000e+00", "tolerance"):
        assert part in message, message


def test_nondeterministic_family_is_caught(user_family):
    @user_family("global_rng", attributes=())
    def global_rng(width, rng):
        return np.random.default_rng().standard_normal((width, width))

    with pytest.raises(AssertionError, match="not deterministic"):
        assert_family_invariants("global_rng", max_examples=5)


def test_wrong_structured_form_is_caught(user_family):
    class Wrong(mp.DenseMap):
        def _apply(self, h, xp):
            return 2 * h

    @user_family("wrong_fast_path", attributes=())
    def wrong(width, rng):
        return Wrong(np.eye(width))

    with pytest.raises(AssertionError, match="structured form differs"):
        assert_family_invariants("wrong_fast_path", max_examples=5)


def test_declared_invalid_combination_that_is_accepted_is_caught(user_family):
    @user_family(
        "lenient",
        attributes=(),
        params={"a": mp.Param.integer(1, low=1), "b": mp.Param.integer(1, low=1)},
        invalid=[({"a": 2, "b": 2}, "b")],
    )
    def lenient(width, rng, *, a, b):
        return np.eye(width)

    with pytest.raises(AssertionError, match="no error was raised"):
        assert_family_invariants("lenient", max_examples=3)


def test_constraint_message_must_name_the_parameter(user_family):
    def constraint(params):
        if params["a"] + params["b"] > 10:
            raise ValueError("too big")  # does not say which parameter

    @user_family(
        "vague",
        attributes=(),
        params={"a": mp.Param.integer(1, low=1, sample=(1, 4)), "b": mp.Param.integer(1, low=1, sample=(1, 4))},
        constraint=constraint,
        invalid=[({"a": 6, "b": 6}, "b")],
    )
    def vague(width, rng, *, a, b):
        return np.eye(width)

    with pytest.raises(AssertionError, match="does not name 'b'"):
        assert_family_invariants("vague", max_examples=3)


def test_family_declaring_a_false_sparsity_is_caught(user_family):
    @user_family("dense_ones", attributes=("sparse(1)",))
    def dense_ones(width, rng):
        return np.ones((width, width))

    with pytest.raises(AssertionError, match=r"attribute 'sparse\(1\)' fails at width=2"):
        assert_family_invariants("dense_ones", max_examples=10)


def test_assert_family_invariants_validates_arguments():
    with pytest.raises(ValueError, match="max_examples must be >= 1"):
        assert_family_invariants("identity", max_examples=0)
    with pytest.raises(ValueError, match="unknown mapping family"):
        assert_family_invariants("no_such_family")


def test_command_line_invocation_from_the_brief():
    code = "from ramodel.testing import assert_family_invariants; assert_family_invariants('sparse_unipotent')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
