"""The Jacobian-file loader under a budget and under fuzzing: ValueError or the identical set, nothing else.

Zip bombs (a member that inflates to far more than the file) are refused, or skipped when
unknown, without being inflated: the peak memory of the load is measured with tracemalloc.
"""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramodel.jacobian_set import FORMAT, MAX_LOAD_BYTES, JacobianSet

RNG = np.random.default_rng(7)
L, N, D, K, C = 2, 5, 4, 2, 3


def _factors():
    A = RNG.standard_normal((L, N, D, D))
    U, S, Vt = np.linalg.svd(A)
    return dict(U=U[..., :K], S=S[..., :K], V=np.swapaxes(Vt, -1, -2)[..., :K])


BASES = {
    "dense": JacobianSet(labels=RNG.integers(0, C, N), classes=C, meta={"arch": "fuzz", "seed": 7},
                         jacobians=RNG.standard_normal((L, N, D, D)),
                         representations=RNG.standard_normal((L + 1, N, D)), skips=np.eye(D),
                         classifier=RNG.standard_normal((C, D))),
    "factors": JacobianSet(labels=RNG.integers(0, C, N), classes=C, meta={"arch": "fuzz"}, **_factors(),
                           skips=RNG.standard_normal((L, D, D)).astype(np.float64)),
}
REQUIRED = ("format", "meta", "labels", "classes")


def _arrays(js: JacobianSet) -> dict:
    out = {"format": np.array(FORMAT), "meta": np.array(json.dumps(js.meta)),
           "classes": np.array(js.classes, dtype=np.int64)}
    out.update({k: np.array(v) for k, v in js._arrays().items()})
    return out


def _npy(a: np.ndarray, *, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=allow_pickle)
    return buf.getvalue()


def _zip(members: dict, *, deflate: bool) -> bytes:
    """A plain zip (no zip64 records) of ``name -> bytes``."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _file(arrays: dict, *, deflate: bool, pickled=()) -> bytes:
    return _zip({f"{k}.npy": _npy(a, allow_pickle=k in pickled) for k, a in arrays.items()}, deflate=deflate)


def _declare_size(data: bytes, member: str, size: int) -> bytes:
    """``data`` with ``member``'s uncompressed size set to ``size`` in both zip headers."""
    b = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    struct.pack_into("<I", b, info.header_offset + 22, size)  # local file header
    pos = 0
    while True:
        pos = b.find(b"PK\x01\x02", pos)
        assert pos >= 0, member
        n = struct.unpack_from("<H", b, pos + 28)[0]
        if bytes(b[pos + 46: pos + 46 + n]).decode() == member:
            struct.pack_into("<I", b, pos + 24, size)  # central directory entry
            return bytes(b)
        pos += 4


def _load(data: bytes, **kw) -> JacobianSet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return JacobianSet.load(io.BytesIO(data), **kw)


def _same(a: JacobianSet, b: JacobianSet) -> None:
    assert a.classes == b.classes and a.meta == b.meta
    fa, fb = a._arrays(), b._arrays()
    assert fa.keys() == fb.keys()
    for key in fa:
        assert fa[key].dtype == fb[key].dtype, key
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------------- the budget
def _bomb(name: str, nbytes: int, header: dict | None = None) -> bytes:
    """A deflated member of ``nbytes`` zeros (after an npy header when given), streamed."""
    buf = io.BytesIO()
    base = _arrays(BASES["dense"])
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, a in base.items():
            if f"{k}.npy" != name:
                zf.writestr(f"{k}.npy", _npy(a))
        with zf.open(name, "w", force_zip64=True) as fh:
            if header is not None:
                np.lib.format.write_array_header_1_0(fh, header)
            chunk = bytes(1 << 20)
            for _ in range(nbytes >> 20):
                fh.write(chunk)
    return buf.getvalue()


def test_an_unknown_member_is_skipped_without_inflating_it():
    data = _bomb("junk.npy", 256 << 20)  # 256 MiB of zeros in about 250 KiB
    assert len(data) < (2 << 20)
    with pytest.warns(UserWarning, match=r"ignoring unknown keys \['junk'\]"):
        peak = _peak(lambda: _same(JacobianSet.load(io.BytesIO(data)), BASES["dense"]))
    assert peak < (8 << 20), peak


def test_a_known_member_above_the_cap_is_refused_before_inflating():
    shape = (L, N, 1024, 1024)
    data = _bomb("jacobians.npy", L * N * 8 << 20, {"descr": "<f8", "fortran_order": False, "shape": shape})
    box = {}

    def load():
        with pytest.raises(ValueError, match=r"above the cap max_bytes=1048576 .*nothing was inflated") as info:
            JacobianSet.load(io.BytesIO(data), max_bytes=1 << 20)
        box["msg"] = str(info.value)

    assert _peak(load) < (8 << 20)
    assert "max_bytes=N" in box["msg"]
    assert MAX_LOAD_BYTES == 8 * 2**30


@pytest.mark.parametrize("deflate, needle", [(False, "stored uncompressed but declares"),
                                             (True, "beyond what deflate can produce")])
def test_declared_sizes_far_above_the_data_are_refused(deflate, needle):
    data = _file(_arrays(BASES["dense"]), deflate=deflate)
    bomb = _declare_size(data, "jacobians.npy", 2**31)
    with pytest.raises(ValueError, match=needle):
        _load(bomb)


def test_max_bytes_is_checked():
    data = _file(_arrays(BASES["dense"]), deflate=False)
    _same(_load(data, max_bytes=len(data)), BASES["dense"])
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        _load(data, max_bytes=-1)
    with pytest.raises(TypeError, match="max_bytes must be an integer"):
        _load(data, max_bytes=1.5)


# -------------------------------------------------------------------------- the fuzz
BAD_DTYPES = {
    "float": [np.int64, np.int32, np.float16, np.complex128, np.bool_, "<U3"],
    "labels": [np.float64, np.int32, np.uint8, np.bool_],
    "classes": [np.float64, np.int32, np.uint64],
    "format": ["S"],
    "meta": ["S"],
}


@st.composite
def corruption(draw):
    """(bytes, expected set or None): None means the file is invalid and must give ValueError."""
    name = draw(st.sampled_from(sorted(BASES)))
    base = BASES[name]
    arrays = _arrays(base)
    deflate = draw(st.booleans())
    kind = draw(st.sampled_from(["flip", "flips", "truncate", "delete", "dtype", "object", "declared"]))
    data = _file(arrays, deflate=deflate)
    if kind in ("flip", "flips"):
        b = bytearray(data)
        for _ in range(1 if kind == "flip" else draw(st.integers(2, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= draw(st.integers(1, 255))
        return bytes(b), base  # identical or ValueError
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))], None
    if kind == "delete":
        key = draw(st.sampled_from(sorted(arrays)))
        arrays.pop(key)
        data = _file(arrays, deflate=deflate)
        if key in REQUIRED or key in ("jacobians", "U", "S", "V"):
            return data, None
        kw = {k: getattr(base, k) for k in ("labels", "classes", "meta", "jacobians", "U", "S", "V",
                                            "representations", "skips", "classifier") if k != key}
        return data, JacobianSet(**kw)  # an optional key removed: a valid, smaller set
    if kind == "dtype":
        key = draw(st.sampled_from(sorted(arrays)))
        group = key if key in BAD_DTYPES else "float"
        dtype = draw(st.sampled_from(BAD_DTYPES[group]))
        arrays[key] = arrays[key].astype(dtype)
        return _file(arrays, deflate=deflate), None
    if kind == "object":
        key = draw(st.sampled_from(sorted(arrays)))
        arrays[key] = np.array([{"evil": 1}, None], dtype=object)
        return _file(arrays, deflate=deflate, pickled=(key,)), None
    # declared sizes far above the data
    key = draw(st.sampled_from(sorted(arrays)))
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(f"{key}.npy")
    factor = draw(st.sampled_from([2, 1000, 10**6, 2**31 // max(info.file_size, 1)]))
    return _declare_size(data, f"{key}.npy", min(info.file_size * factor, 2**32 - 1)), None


def _check(case) -> None:
    data, expected = case
    try:
        back = _load(data)
    except ValueError:
        return
    assert expected is not None, "an invalid file loaded"
    _same(back, expected)


# 1,000 corruptions take about 3 s, so they are in the default run (derandomised by the
# "ci" profile); HYPOTHESIS_PROFILE=deep does not raise this explicit count.
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corruption())
def test_fuzz_value_error_or_identical(case):
    _check(case)
