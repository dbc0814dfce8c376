"""JacobianSet: validation, the .npz round trip, atomic saves, and hostile files."""

from __future__ import annotations

import io
import json
import os
import stat
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ramodel.jacobian_set import FORMAT, JacobianSet
from ramodel.spectra import top_singular

L, N, D, K, C = 2, 5, 4, 2, 3


def make_set(form="dense", dtype=np.float64, *, optional=True, skips_per_layer=True, seed=0):
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((L, N, D, D)).astype(dtype)
    kw = {}
    if form == "dense":
        kw["jacobians"] = J
    else:
        U, S, V = top_singular(J, K)
        kw.update(U=U, S=S, V=V)
    if optional:
        kw["representations"] = rng.standard_normal((L + 1, N, D)).astype(dtype)
        kw["skips"] = rng.standard_normal((L, D, D) if skips_per_layer else (D, D)).astype(dtype)
        kw["classifier"] = rng.standard_normal((C, D)).astype(dtype)
    meta = {"arch": "toy", "depth": L, "train_acc": 0.5, "layers": [0, 1], "nested": {"a": None}}
    return JacobianSet(labels=np.array([0, 1, 2, 0, 1]), classes=C, meta=meta, **kw)


def assert_same(a: JacobianSet, b: JacobianSet) -> None:
    assert a.classes == b.classes
    assert a.meta == b.meta
    fa, fb = a._arrays(), b._arrays()
    assert fa.keys() == fb.keys()
    for key in fa:
        assert fa[key].dtype == fb[key].dtype, key
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


def file_arrays(js: JacobianSet) -> dict:
    """The arrays exactly as save() writes them (independently rebuilt here)."""
    out = {
        "format": np.array(FORMAT),
        "meta": np.array(json.dumps(js.meta)),
        "classes": np.array(js.classes, dtype=np.int64),
    }
    for key in ("labels", "jacobians", "U", "S", "V", "representations", "skips", "classifier"):
        if getattr(js, key) is not None:
            out[key] = np.array(getattr(js, key))
    return out


def npz_bytes(arrays: dict, *, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    if allow_pickle:
        # np.savez always allows pickling; write members by hand to be explicit.
        with zipfile.ZipFile(buf, "w") as zf:
            for key, a in arrays.items():
                with zf.open(key + ".npy", "w") as fh:
                    np.lib.format.write_array(fh, np.asanyarray(a), allow_pickle=True)
    else:
        np.savez(buf, **arrays)
    return buf.getvalue()


def load_bytes(data: bytes) -> JacobianSet:
    return JacobianSet.load(io.BytesIO(data))


DENSE = make_set("dense")
FACTORS = make_set("factors")
DENSE_BYTES = npz_bytes(file_arrays(DENSE))
FACTOR_BYTES = npz_bytes(file_arrays(FACTORS))


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("form", ["dense", "factors"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("skips_per_layer", [True, False])
def test_round_trip(tmp_path, form, dtype, skips_per_layer):
    js = make_set(form, dtype, skips_per_layer=skips_per_layer)
    path = js.save(tmp_path / "net.npz")
    assert path == tmp_path / "net.npz" and sorted(os.listdir(tmp_path)) == ["net.npz"]
    back = JacobianSet.load(path)
    assert_same(js, back)
    assert back.dtype == dtype and back.has_dense == (form == "dense")
    assert JacobianSet.load(str(path)).to_dict() == js.to_dict()
    # The file is a plain npz that numpy reads without pickle.
    with np.load(path, allow_pickle=False) as z:
        assert str(z["format"]) == FORMAT
        assert json.loads(str(z["meta"])) == js.meta
        assert z["labels"].dtype == np.int64 and z["classes"].dtype == np.int64


def test_round_trip_without_optional_keys_and_suffix(tmp_path):
    js = make_set("factors", optional=False)
    path = js.save(tmp_path / "no_suffix")
    assert sorted(os.listdir(tmp_path)) == ["no_suffix"]  # np.savez would append .npz
    back = JacobianSet.load(path)
    assert_same(js, back)
    assert back.representations is None and back.skips is None and back.classifier is None


def test_save_overwrites_and_keeps_umask_mode(tmp_path):
    path = tmp_path / "net.npz"
    make_set("dense", seed=1).save(path)
    make_set("dense", seed=2).save(path)
    assert_same(JacobianSet.load(path), make_set("dense", seed=2))
    fresh = tmp_path / "fresh.npz"
    DENSE.save(fresh)
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask


# --------------------------------------------------------------- properties
def test_properties_and_summaries():
    assert (DENSE.depth, DENSE.n_inputs, DENSE.width, DENSE.k, DENSE.has_dense) == (L, N, D, None, True)
    assert (FACTORS.depth, FACTORS.n_inputs, FACTORS.width, FACTORS.k, FACTORS.has_dense) == (L, N, D, K, False)
    d = FACTORS.to_dict()
    assert d["shapes"] == {
        "labels": [N], "U": [L, N, D, K], "S": [L, N, K], "V": [L, N, D, K],
        "representations": [L + 1, N, D], "skips": [L, D, D], "classifier": [C, D],
    }
    assert d["form"] == "factors" and d["k"] == K and d["meta"] == FACTORS.meta
    json.dumps(d)  # plain data only
    r = repr(FACTORS)
    assert "\n" not in r and len(r) < 200 and "k=2" in r and "depth=2" in r


def test_repr_html_escapes_meta():
    js = JacobianSet(labels=[0, 1], classes=2, meta={"note": "<script>"}, jacobians=np.zeros((1, 2, 3, 3)))
    h = js._repr_html_()
    assert "<table>" in h and "jacobians" in h and "(1, 2, 3, 3)" in h
    assert "<script>" not in h and "&lt;script&gt;" in h


def test_arrays_read_only_inputs_untouched():
    J = np.zeros((1, 2, 3, 3))
    labels = np.array([0, 1], dtype=np.int32)
    meta = {"a": (1, 2)}
    js = JacobianSet(labels=labels, classes=2, meta=meta, jacobians=J)
    assert J.flags.writeable and labels.flags.writeable and meta == {"a": (1, 2)}
    assert js.labels.dtype == np.int64 and js.meta == {"a": [1, 2]}  # JSON-normalised
    with pytest.raises(ValueError):
        js.jacobians[0, 0, 0, 0] = 1.0
    with pytest.raises(Exception):
        js.classes = 5  # frozen


# ------------------------------------------------------- constructor rejections
def _kw(form="dense", **change):
    js = make_set(form)
    kw = {k: getattr(js, k) for k in ("labels", "classes", "meta", "jacobians", "U", "S", "V",
                                      "representations", "skips", "classifier")}
    kw.update(change)
    return kw


def _nan_at(a, idx=(0,)):
    b = np.array(a)
    b[idx] = np.nan
    return b


U0, S0, V0 = FACTORS.U, FACTORS.S, FACTORS.V

BAD = [
    ("both forms", _kw("factors", jacobians=DENSE.jacobians), "exactly one"),
    ("no Jacobians", _kw("dense", jacobians=None), "'jacobians'"),
    ("missing S", _kw("factors", S=None), "missing \\['S'\\]"),
    ("J rank", _kw(jacobians=DENSE.jacobians[0]), "'jacobians' must have 4 dimensions"),
    ("J not square", _kw(jacobians=np.zeros((L, N, D, D + 1))), "'jacobians' must have shape"),
    ("J int", _kw(jacobians=np.zeros((L, N, D, D), dtype=np.int64)), "'jacobians' must be float32 or float64"),
    ("J float16", _kw(jacobians=np.zeros((L, N, D, D), dtype=np.float16)), "'jacobians' must be float32"),
    ("J inf", _kw(jacobians=_nan_at(DENSE.jacobians) * 0 + np.inf), "'jacobians' must be finite"),
    ("labels float", _kw(labels=np.zeros(N)), "'labels' must be an integer"),
    ("labels 2-D", _kw(labels=np.zeros((N, 1), dtype=int)), "'labels' must have shape"),
    ("labels length", _kw(labels=np.zeros(N + 1, dtype=int)), "'labels' must have shape \\(N,\\) = \\(5,\\)"),
    ("labels >= C", _kw(labels=[0, 1, 2, 3, 0]), "'labels' must lie in \\[0, classes\\) = \\[0, 3\\)"),
    ("labels < 0", _kw(labels=[0, 1, -1, 0, 0]), "'labels' must lie in"),
    ("classes < 2", _kw(classes=1, labels=np.zeros(N, dtype=int)), "classes must be >= 2"),
    ("reps NaN", _kw(representations=_nan_at(DENSE.representations, (2, 1, 3))), "'representations' must be finite"),
    ("reps shape", _kw(representations=np.zeros((L, N, D))), "'representations' must have shape \\(L\\+1, N, d\\)"),
    ("skips shape", _kw(skips=np.zeros((L + 1, D, D))), "'skips' must have shape"),
    ("skips rank", _kw(skips=np.zeros(D)), "'skips' must have 2 or 3 dimensions"),
    ("skips NaN", _kw(skips=_nan_at(DENSE.skips)), "'skips' must be finite"),
    ("classifier shape", _kw(classifier=np.zeros((C + 1, D))), "'classifier' must have shape \\(C, d\\)"),
    ("classifier NaN", _kw(classifier=_nan_at(DENSE.classifier)), "'classifier' must be finite"),
    ("S increasing", _kw("factors", S=S0[..., ::-1]), "'S' must be non-increasing"),
    ("S negative", _kw("factors", S=-S0[..., ::-1]), "'S' holds singular values"),
    ("S NaN", _kw("factors", S=_nan_at(S0, (1, 2, 0))), "'S' must be finite"),
    ("U scaled", _kw("factors", U=U0 * 1.01), "'U' must have orthonormal columns"),
    ("V not orthonormal", _kw("factors", V=V0 + 0.1), "'V' must have orthonormal columns"),
    ("V shape", _kw("factors", V=V0[..., :1]), "'V' must have shape"),
    ("S shape", _kw("factors", S=S0[..., :1]), "'S' must have shape"),
    ("U rank", _kw("factors", U=U0[0]), "'U' must have 4 dimensions"),
    ("k > d", _kw("factors", U=np.zeros((L, N, 2, 3)), V=np.zeros((L, N, 2, 3)), S=np.zeros((L, N, 3))),
     "k <= d"),
    ("dtype mix", _kw("factors", S=S0.astype(np.float32)), "'S' must have the dtype of 'U'"),
    ("U NaN", _kw("factors", U=_nan_at(U0)), "'U' must be finite"),
    ("meta NaN", _kw(meta={"acc": float("nan")}), "'meta' must be JSON-serialisable"),
    ("meta object", _kw(meta={"f": object()}), "'meta' must be JSON-serialisable"),
]


@pytest.mark.parametrize("kw, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_constructor_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        JacobianSet(**kw)


def test_constructor_type_errors():
    with pytest.raises(TypeError, match="'meta' must be a mapping"):
        JacobianSet(**_kw(meta=[1, 2]))
    with pytest.raises(TypeError, match="classes must be an integer"):
        JacobianSet(**_kw(classes=3.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_orthonormality_tolerance_is_the_documented_one(dtype):
    # Exactly orthonormal columns scaled by (1 + delta): max |U^T U - I| = 2 delta + delta^2.
    d, k = 16, 2
    tol = 100 * np.sqrt(d) * np.finfo(dtype).eps
    E = np.zeros((1, 1, d, k), dtype=dtype)
    E[0, 0, 0, 0] = E[0, 0, 1, 1] = 1
    S = np.array([[[2.0, 1.0]]], dtype=dtype)
    kw = dict(labels=[0], classes=2, S=S, V=E)
    JacobianSet(U=E * dtype(1 + 0.4 * tol), **kw)  # 0.8 tol: accepted
    with pytest.raises(ValueError, match="'U' must have orthonormal columns"):
        JacobianSet(U=E * dtype(1 + 0.6 * tol), **kw)  # 1.2 tol: rejected
    # A tie broken by rounding in S is accepted; a real rise is not.
    eps = np.finfo(dtype).eps
    JacobianSet(U=E, S=np.array([[[1.0, 1.0 + 10 * eps]]], dtype=dtype), labels=[0], classes=2, V=E)
    with pytest.raises(ValueError, match="'S' must be non-increasing"):
        JacobianSet(U=E, S=np.array([[[1.0, 1.0 + 1000 * eps]]], dtype=dtype), labels=[0], classes=2, V=E)


# -------------------------------------------------------------- file rejections
def _file(js=DENSE, drop=(), **change):
    arrays = file_arrays(js)
    for key in drop:
        del arrays[key]
    arrays.update(change)
    return npz_bytes(arrays)


FILE_BAD = [
    ("no format", _file(drop=["format"]), "missing required key 'format'"),
    ("no meta", _file(drop=["meta"]), "missing required key 'meta'"),
    ("no labels", _file(drop=["labels"]), "missing required key 'labels'"),
    ("no classes", _file(drop=["classes"]), "missing required key 'classes'"),
    ("no jacobians", _file(drop=["jacobians"]), "'jacobians'"),
    ("no V", _file(FACTORS, drop=["V"]), "missing \\['V'\\]"),
    ("version 2", _file(format=np.array("ramodel.jacobians/2")),
     "'format': unsupported version 'ramodel.jacobians/2'; this reader knows 'ramodel.jacobians/1'"),
    ("foreign format", _file(format=np.array("something else")), "'format' must be 'ramodel.jacobians/1'"),
    ("format bytes", _file(format=np.array(b"ramodel.jacobians/1")), "'format' must be a 0-d str array"),
    ("format 1-d", _file(format=np.array([FORMAT])), "'format' must be a 0-d str array"),
    ("meta not JSON", _file(meta=np.array("{not json")), "'meta' must be a JSON object string"),
    ("meta list", _file(meta=np.array("[1, 2]")), "'meta' must be a JSON object"),
    ("meta NaN", _file(meta=np.array('{"a": NaN}')), "'meta' must be a JSON object string"),
    ("labels int32", _file(labels=DENSE.labels.astype(np.int32)), "'labels' must be int64"),
    ("labels range", _file(labels=np.array([0, 1, 2, 3, 0])), "'labels' must lie in"),
    ("classes float", _file(classes=np.array(3.0)), "'classes' must be a 0-d int64"),
    ("classes 1-d", _file(classes=np.array([3])), "'classes' must be a 0-d int64"),
    ("J NaN", _file(jacobians=_nan_at(DENSE.jacobians, (1, 4, 3, 3))), "'jacobians' must be finite"),
    ("J float16", _file(jacobians=DENSE.jacobians.astype(np.float16)), "'jacobians' must be float32 or float64"),
    ("reps inconsistent N", _file(representations=np.zeros((L + 1, N + 1, D))), "'representations' must have shape"),
    ("U rank", _file(FACTORS, U=FACTORS.U[0]), "'U' must have 4 dimensions"),
    ("S order", _file(FACTORS, S=FACTORS.S[..., ::-1]), "'S' must be non-increasing"),
    ("not a zip", b"this is not a zip file at all", "not a readable ramodel Jacobian file"),
    ("empty", b"", "not a readable ramodel Jacobian file"),
    ("truncated", DENSE_BYTES[: len(DENSE_BYTES) // 2], "not a readable ramodel Jacobian file"),
]


@pytest.mark.parametrize("data, match", [b[1:] for b in FILE_BAD], ids=[b[0] for b in FILE_BAD])
def test_load_rejects(tmp_path, data, match):
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=match) as info:
        JacobianSet.load(path)
    assert str(path) in str(info.value)


def test_load_rejects_npy_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match="not a readable ramodel Jacobian file"):
        JacobianSet.load(path)


@pytest.mark.parametrize("key", ["labels", "jacobians", "meta"])
def test_load_rejects_pickled_objects(key):
    arrays = file_arrays(DENSE)
    arrays[key] = np.array([{"evil": 1}, None], dtype=object)
    with pytest.raises(ValueError, match=f"member '{key}' holds Python objects"):
        load_bytes(npz_bytes(arrays, allow_pickle=True))


def test_load_rejects_header_that_shrinks_an_array():
    # A valid zip (correct CRC) whose npy header declares fewer elements than stored:
    # numpy.load would silently return a prefix.
    arrays = file_arrays(DENSE)
    J = arrays.pop("jacobians")
    buf = io.BytesIO(npz_bytes(arrays))
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": (1, N, D, D)})
    member.write(J.tobytes())
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr("jacobians.npy", member.getvalue())
    with np.load(io.BytesIO(buf.getvalue())) as z:
        assert z["jacobians"].shape == (1, N, D, D)  # the failure mode being guarded against
    with pytest.raises(ValueError, match="member 'jacobians' declares shape"):
        load_bytes(buf.getvalue())


def test_load_warns_and_ignores_unknown_keys():
    data = _file(representation=np.zeros(3))
    with pytest.warns(UserWarning, match="ignoring unknown keys \\['representation'\\]"):
        back = load_bytes(data)
    assert_same(back, DENSE)


def test_load_missing_path_and_bad_source(tmp_path):
    with pytest.raises(FileNotFoundError):
        JacobianSet.load(tmp_path / "nope.npz")
    with pytest.raises(TypeError, match="source must be a path or a binary file object"):
        JacobianSet.load(42)


def test_loaded_big_endian_and_fortran_arrays_are_accepted():
    arrays = file_arrays(DENSE)
    arrays["jacobians"] = np.asfortranarray(arrays["jacobians"]).astype(">f8")
    back = load_bytes(npz_bytes(arrays))
    assert_same(back, DENSE)


# ------------------------------------------------------------------ atomic save
def test_save_into_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DENSE.save(tmp_path / "missing" / "net.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch, error, existing):
    path = tmp_path / "net.npz"
    if existing:
        FACTORS.save(path)
    before = path.read_bytes() if existing else None

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")
        raise error("interrupted")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(error, match="interrupted"):
        DENSE.save(path)
    assert os.listdir(tmp_path) == (["net.npz"] if existing else [])
    if existing:
        assert path.read_bytes() == before


def test_failed_replace_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a_folder"
    target.mkdir()
    with pytest.raises(OSError):
        DENSE.save(target)  # os.replace cannot put a file over a folder
    assert os.listdir(tmp_path) == ["a_folder"] and os.listdir(target) == []


# -------------------------------------------------------- hostile files (fuzz)
def _check_loads_cleanly(data: bytes, original: JacobianSet) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            back = load_bytes(data)
    except ValueError:
        return
    # A flip in bytes zipfile never checks (timestamps, flag bits) leaves the data intact:
    # the member CRCs cover every array byte and the names are cross-checked.
    assert_same(back, original)


@given(
    base=st.sampled_from(["dense", "factors"]),
    cut=st.floats(0, 1, exclude_max=True),
)
def test_truncated_files_give_value_error(base, cut):
    data = DENSE_BYTES if base == "dense" else FACTOR_BYTES
    with pytest.raises(ValueError):
        load_bytes(data[: int(cut * len(data))])


@given(
    base=st.sampled_from(["dense", "factors"]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_flipped_bytes_give_value_error_or_the_original(base, flips):
    data = bytearray(DENSE_BYTES if base == "dense" else FACTOR_BYTES)
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    _check_loads_cleanly(bytes(data), DENSE if base == "dense" else FACTORS)


def test_every_single_byte_position_is_safe():
    # Exhaustive over positions (one XOR pattern each): no exception other than
    # ValueError escapes, whatever header or data byte is hit.
    data = FACTOR_BYTES
    for i in range(len(data)):
        b = bytearray(data)
        b[i] ^= 0x5A
        _check_loads_cleanly(bytes(b), FACTORS)


KEYS = ["format", "meta", "labels", "classes", "U", "S", "V", "representations", "skips", "classifier"]
FLOAT_KEYS = ["U", "S", "V", "representations", "skips", "classifier"]
WRONG_DTYPES = {
    "float": [np.int64, np.int32, np.float16, np.complex128, np.bool_, "<U3"],
    "labels": [np.float64, np.int32, np.uint8, np.bool_],
    "classes": [np.float64, np.int32, np.uint64],
    "format": ["S"],
    "meta": ["S"],
}


@st.composite
def corruption(draw):
    arrays = file_arrays(FACTORS)
    kind = draw(st.sampled_from(["drop", "dtype", "nan", "labels", "format", "object"]))
    if kind == "drop":
        key = draw(st.sampled_from(KEYS))
        del arrays[key]
        if key in ("representations", "skips", "classifier"):
            return arrays, None  # optional: still valid
        return arrays, f"'{key}'"
    if kind == "dtype":
        key = draw(st.sampled_from(KEYS))
        group = "float" if key in FLOAT_KEYS else key
        dtype = draw(st.sampled_from(WRONG_DTYPES[group]))
        arrays[key] = arrays[key].astype(dtype)
        return arrays, f"'{key}'"
    if kind == "nan":
        key = draw(st.sampled_from(FLOAT_KEYS))
        a = arrays[key].copy()
        flat = draw(st.integers(0, a.size - 1))
        a.reshape(-1)[flat] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        arrays[key] = a
        return arrays, f"'{key}' must be finite"
    if kind == "labels":
        labels = arrays["labels"].copy()
        labels[draw(st.integers(0, N - 1))] = draw(st.one_of(st.integers(-(2**62), -1), st.integers(C, 2**62)))
        arrays["labels"] = labels
        return arrays, "'labels' must lie in"
    if kind == "format":
        text = draw(st.text(max_size=30).filter(lambda s: s != FORMAT))
        arrays["format"] = np.array(text)
        return arrays, "'format'"
    key = draw(st.sampled_from(KEYS))
    arrays[key] = np.array([1, "x", None], dtype=object)
    return arrays, f"member '{key}' holds Python objects"


@given(corruption())
def test_structured_corruptions_name_the_key(case):
    arrays, match = case
    data = npz_bytes(arrays, allow_pickle=any(a.dtype.hasobject for a in arrays.values()))
    if match is None:
        back = load_bytes(data)
        assert back.U is not None
        return
    with pytest.raises(ValueError) as info:
        load_bytes(data)
    assert match in str(info.value)


def test_compressed_npz_from_other_writers_loads():
    buf = io.BytesIO()
    np.savez_compressed(buf, **file_arrays(FACTORS))
    assert_same(load_bytes(buf.getvalue()), FACTORS)


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    J = torch.zeros((1, 2, 3, 3), dtype=torch.float32)
    js = JacobianSet(labels=torch.tensor([0, 1]), classes=2, jacobians=J)
    assert js.jacobians.dtype == np.float32 and js.labels.dtype == np.int64
