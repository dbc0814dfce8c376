"""The Jacobian file: what a trained network exports for RA analysis (``spec/FORMAT.md``).

Design constraints, in order:

1. A file is never trusted. It is read with ``allow_pickle=False`` semantics (object
   arrays are refused before any data is read), every key is validated, and any
   corruption (not a zip, truncated, flipped bytes, bad CRC, a header whose size
   disagrees with its data) ends in a ``ValueError`` that names the file, never in a
   bare traceback from ``zipfile`` or ``numpy``.
2. A :class:`JacobianSet` in memory mirrors the file exactly: the same keys, shapes
   and dtypes, with the same validation, so anything that can be built can be saved
   and anything that loads can be analysed.
3. A write is atomic: the archive is written to a temporary file in the target
   folder, flushed and fsynced, then moved into place with ``os.replace``
   (:mod:`ramodel._io`, the package's one writer).
4. A read has a budget. Before anything is inflated, every known member's declared
   size is checked against its npy header (shape x dtype), against what its compressed
   bytes can produce (deflate cannot exceed about 1032:1) and, summed, against a cap
   (``max_bytes``, default :data:`MAX_LOAD_BYTES`, 8 GiB); the headers' ranks, float
   dtypes and common N are checked too. Unknown members are skipped without being
   inflated. A zip bomb is therefore refused (or skipped) with ``ValueError`` in
   milliseconds, never read into memory.

The archive is NumPy's ``.npz`` (a zip of ``.npy`` members). It is read member by
member with :mod:`zipfile` and the public ``numpy.lib.format`` header readers rather
than ``numpy.load``: ``numpy.load`` reads only as many bytes as a member's header
declares, so a corrupt header that shrinks an array would load a silently wrong
prefix and the zip CRC would never be checked. Here the declared size must equal
the stored size and every member is read to its end, which makes ``zipfile``
verify its CRC-32.

Validation rules (the same for files and for arrays passed to the constructor)
------------------------------------------------------------------------------
- ``labels`` int64 ``(N,)`` in ``[0, classes)``; ``classes`` an integer >= 2.
  The constructor casts any integer dtype to int64; a file must hold int64.
- Exactly one of dense ``jacobians (L, N, d, d)`` or factors ``U (L, N, d, k)``,
  ``S (L, N, k)``, ``V (L, N, d, k)`` with ``1 <= k <= d``; all sizes >= 1.
- Floating arrays are float32 or float64 (never cast: no silent precision change);
  ``U``, ``S`` and ``V`` share one dtype. Other arrays may differ in dtype.
- Optional ``representations (L+1, N, d)``, ``skips (L, d, d)`` or ``(d, d)``,
  ``classifier (classes, d)``.
- Every floating array is finite.
- ``S`` is non-negative and non-increasing along its last axis, up to
  ``100 * eps * S[..., 0]``; ``U`` and ``V`` have orthonormal columns:
  ``max |U^T U - I| <= 100 * sqrt(d) * eps``, where ``eps`` is the machine epsilon of
  the stored dtype. LAPACK and randomised SVDs land below ``4 * sqrt(d) * eps``, so
  the margin is wide, while a wrong layout (``V^T`` stored for ``V``, unnormalised
  vectors) is off by O(1). Factors computed in float32 must be stored as float32:
  casting them to float64 does not make them orthonormal to float64 precision.
- ``meta`` is a JSON object (strict JSON: no NaN or Infinity), stored as a string.
- Unknown keys in a file are ignored with a ``UserWarning`` that names them, so a
  misspelt optional key (``representation``) is visible but a file with extra
  annotations still loads. They are not kept, so ``load`` then ``save`` drops them.
"""

from __future__ import annotations

import html
import json
import math
import os
import pathlib
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from ._io import atomic_write
from ._source import ORDER_FACTOR, ORTHONORMAL_FACTOR, check_factor_values
from ._validation import check_int
from .backend import to_numpy

__all__ = ["FORMAT", "FORMAT_VERSIONS", "JacobianSet", "MAX_LOAD_BYTES"]

FORMAT = "ramodel.jacobians/1"
#: Format strings this reader understands.
FORMAT_VERSIONS = (FORMAT,)

_FORMAT_RE = re.compile(r"ramodel\.jacobians/(\d+)")
_REQUIRED = ("format", "meta", "labels", "classes")
_FACTORS = ("U", "S", "V")
_OPTIONAL = ("representations", "skips", "classifier")
_FLOAT_KEYS = ("jacobians",) + _FACTORS + _OPTIONAL
_KNOWN = _REQUIRED + ("jacobians",) + _FACTORS + _OPTIONAL
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Default cap of :meth:`JacobianSet.load` on the bytes of array data a file may inflate to
#: (the sum of its known members' declared sizes), checked before anything is inflated.
#: 8 GiB holds, e.g., float32 Jacobians of 64 blocks x 2,000 inputs x width 128.
MAX_LOAD_BYTES = 8 * 2**30
# Deflate's ratio is at most about 1032:1; a member declaring more is corrupt or a bomb.
_MAX_INFLATE_RATIO = 1100
# Ranks of each member (FORMAT.md); checked from the headers before any data is read.
_RANKS = {"jacobians": (4,), "U": (4,),
          "S": (3,), "V": (4,), "representations": (3,), "skips": (2, 3), "classifier": (2,)}
# Tolerance factors of the factor checks (see the module docstring).
_ORTHONORMAL_FACTOR = ORTHONORMAL_FACTOR
_ORDER_FACTOR = ORDER_FACTOR


def _immutable_bytes_view(a: np.ndarray) -> bool:
    # Arrays read by the loader: read-only views of an immutable bytes object nobody else holds.
    base = a
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return isinstance(base, bytes)


def _readonly(a: np.ndarray) -> np.ndarray:
    # The set owns its data: a private copy (so later changes to the caller's array cannot
    # bypass validation), exposed as a read-only view (so nobody can change it through the
    # set either). Arrays the loader made from the file's bytes are already immutable.
    if not _immutable_bytes_view(a):
        a = np.array(a, copy=True, order="K")
    v = a.view()
    v.flags.writeable = False
    return v


def _as_host(key: str, value: Any) -> np.ndarray:
    try:
        return to_numpy(value)
    except Exception as exc:
        raise TypeError(f"{key!r} must be an array, got {type(value).__name__}") from exc


def _float_array(key: str, value: Any, ndims: tuple[int, ...]) -> np.ndarray:
    a = _as_host(key, value)
    if a.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{key!r} must be float32 or float64, got dtype {a.dtype}")
    if a.ndim not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{key!r} must have {want} dimensions, got shape {a.shape}")
    return a


def _check_shape(key: str, a: np.ndarray, expected: tuple[int, ...], names: str) -> None:
    if a.shape != expected:
        raise ValueError(f"{key!r} must have shape {names} = {expected}, got {a.shape}")


def _check_finite(key: str, a: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), a.shape))
        raise ValueError(
            f"{key!r} must be finite, but it holds {int(bad.sum())} NaN/Inf value(s) "
            f"(first at index {where})"
        )


def _normalise_meta(meta: Any) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise TypeError(f"'meta' must be a mapping (a JSON object), got {type(meta).__name__}")
    try:
        text = json.dumps(dict(meta), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"'meta' must be JSON-serialisable (strict JSON, no NaN/Inf): {exc}") from exc
    # The JSON round trip makes the in-memory dict equal to what load() will return.
    return json.loads(text)


@dataclass(frozen=True, eq=False, repr=False)
class JacobianSet:
    """Residual Jacobians of one trained network on N inputs, as in ``spec/FORMAT.md``.

    Construction validates every field (see the module docstring for the rules) and
    stores read-only views of its own copy of every array, on the host (CuPy or DLPack
    arrays are copied to NumPy): changing the caller's arrays afterwards changes
    nothing in the set, so what was validated is what :meth:`save` writes. Compare two sets field by field; ``==`` is identity.

    Attributes
    ----------
    labels : ndarray, shape (N,), int64
        Class of each input, in ``[0, classes)``.
    classes : int
        Number of classes C of the network.
    meta : dict
        JSON object: architecture, dataset, skip family, accuracies, seed, versions, ...
    jacobians : ndarray, shape (L, N, d, d), float32 or float64, or None
        Dense residual Jacobians ``J_l(x_n)``. Exactly one of ``jacobians`` and the
        factors ``U, S, V`` is given.
    U : ndarray, shape (L, N, d, k), or None
        Top-k left singular vectors (orthonormal columns).
    S : ndarray, shape (L, N, k), or None
        Top-k singular values, non-increasing.
    V : ndarray, shape (L, N, d, k), or None
        Top-k right singular vectors (orthonormal columns).
    representations : ndarray, shape (L+1, N, d), or None
        ``h_0 .. h_L``.
    skips : ndarray, shape (L, d, d) or (d, d), or None
        Skip matrices ``M_l`` when not the identity.
    classifier : ndarray, shape (C, d), or None
        Final linear layer.

    Examples
    --------
    >>> import numpy as np
    >>> J = np.zeros((2, 3, 4, 4))
    >>> js = JacobianSet(labels=[0, 1, 1], classes=2, meta={"arch": "toy"}, jacobians=J)
    >>> js.depth, js.n_inputs, js.width, js.k, js.has_dense
    (2, 3, 4, None, True)
    >>> js
    JacobianSet(dense, depth=2, n_inputs=3, width=4, classes=2, dtype=float64)
    """

    labels: np.ndarray
    classes: int
    meta: dict = field(default_factory=dict)
    jacobians: np.ndarray | None = None
    U: np.ndarray | None = None
    S: np.ndarray | None = None
    V: np.ndarray | None = None
    representations: np.ndarray | None = None
    skips: np.ndarray | None = None
    classifier: np.ndarray | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        classes = check_int("classes", self.classes, minimum=2)
        put("classes", classes)
        put("meta", _normalise_meta(self.meta))

        labels = _as_host("labels", self.labels)
        if labels.dtype.kind not in "iu":
            raise ValueError(f"'labels' must be an integer array (int64 in a file), got dtype {labels.dtype}")
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(f"'labels' must have shape (N,) with N >= 1, got {labels.shape}")

        have = {k: getattr(self, k) is not None for k in ("jacobians",) + _FACTORS}
        if have["jacobians"] and any(have[k] for k in _FACTORS):
            raise ValueError("give exactly one of 'jacobians' (dense) or 'U', 'S', 'V' (factors), not both")
        if have["jacobians"]:
            J = _float_array("jacobians", self.jacobians, (4,))
            L, N, d, d2 = J.shape
            if d != d2 or min(J.shape) < 1:
                raise ValueError(f"'jacobians' must have shape (L, N, d, d) with sizes >= 1, got {J.shape}")
            _check_finite("jacobians", J)
            put("jacobians", _readonly(J))
        elif any(have[k] for k in _FACTORS):
            missing = [k for k in _FACTORS if not have[k]]
            if missing:
                raise ValueError(f"the factor form needs 'U', 'S' and 'V'; missing {missing}")
            U = _float_array("U", self.U, (4,))
            L, N, d, k = U.shape
            if min(U.shape) < 1 or k > d:
                raise ValueError(f"'U' must have shape (L, N, d, k) with sizes >= 1 and k <= d, got {U.shape}")
            V = _float_array("V", self.V, (4,))
            S = _float_array("S", self.S, (3,))
            _check_shape("V", V, U.shape, "(L, N, d, k) of 'U'")
            _check_shape("S", S, (L, N, k), "(L, N, k) of 'U'")
            for key, a in (("S", S), ("V", V)):
                if a.dtype != U.dtype:
                    raise ValueError(f"{key!r} must have the dtype of 'U' ({U.dtype}), got {a.dtype}")
            for key, a in (("U", U), ("S", S), ("V", V)):
                _check_finite(key, a)
            check_factor_values(U, S, V)
            put("U", _readonly(U))
            put("S", _readonly(S))
            put("V", _readonly(V))
        else:
            raise ValueError("give the Jacobians: either 'jacobians' (dense) or 'U', 'S', 'V' (factors)")

        if labels.shape != (N,):
            raise ValueError(f"'labels' must have shape (N,) = ({N},) to match the Jacobians, got {labels.shape}")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= classes:
            raise ValueError(f"'labels' must lie in [0, classes) = [0, {classes}), got values in [{lo}, {hi}]")
        put("labels", _readonly(labels.astype(np.int64, copy=False)))

        if self.representations is not None:
            R = _float_array("representations", self.representations, (3,))
            _check_shape("representations", R, (L + 1, N, d), "(L+1, N, d)")
            _check_finite("representations", R)
            put("representations", _readonly(R))
        if self.skips is not None:
            M = _float_array("skips", self.skips, (2, 3))
            _check_shape("skips", M, (L, d, d) if M.ndim == 3 else (d, d), "(L, d, d) or (d, d)")
            _check_finite("skips", M)
            put("skips", _readonly(M))
        if self.classifier is not None:
            W = _float_array("classifier", self.classifier, (2,))
            _check_shape("classifier", W, (classes, d), "(C, d)")
            _check_finite("classifier", W)
            put("classifier", _readonly(W))

    # ------------------------------------------------------------------ shapes
    @property
    def has_dense(self) -> bool:
        """True when the dense ``jacobians`` are stored, False for top-k factors."""
        return self.jacobians is not None

    @property
    def depth(self) -> int:
        """Number of residual blocks L."""
        return int((self.jacobians if self.has_dense else self.U).shape[0])

    @property
    def n_inputs(self) -> int:
        """Number of inputs N."""
        return int(self.labels.shape[0])

    @property
    def width(self) -> int:
        """Feature dimension d of every block."""
        return int((self.jacobians if self.has_dense else self.U).shape[2])

    @property
    def k(self) -> int | None:
        """Number of stored singular triplets, or None for dense Jacobians."""
        return None if self.has_dense else int(self.U.shape[3])

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the Jacobians (of ``U``, ``S`` and ``V`` in the factor form)."""
        return (self.jacobians if self.has_dense else self.U).dtype

    def _arrays(self) -> dict[str, np.ndarray]:
        keys = ("jacobians",) if self.has_dense else _FACTORS
        out = {k: getattr(self, k) for k in ("labels",) + keys + _OPTIONAL}
        return {k: v for k, v in out.items() if v is not None}

    # ----------------------------------------------------------------- summary
    def to_dict(self) -> dict:
        """Summary without array data: form, sizes, dtypes, shapes and a copy of ``meta``.

        Examples
        --------
        >>> import numpy as np
        >>> js = JacobianSet(labels=[0, 1], classes=2, jacobians=np.zeros((1, 2, 3, 3)))
        >>> js.to_dict()["shapes"]
        {'labels': [2], 'jacobians': [1, 2, 3, 3]}
        """
        return {
            "format": FORMAT,
            "form": "dense" if self.has_dense else "factors",
            "depth": self.depth,
            "n_inputs": self.n_inputs,
            "width": self.width,
            "k": self.k,
            "classes": self.classes,
            "dtype": str(self.dtype),
            "shapes": {k: list(v.shape) for k, v in self._arrays().items()},
            "dtypes": {k: str(v.dtype) for k, v in self._arrays().items()},
            "meta": json.loads(json.dumps(self.meta)),
        }

    def __repr__(self) -> str:
        form = "dense" if self.has_dense else f"factors k={self.k}"
        parts = [
            form,
            f"depth={self.depth}",
            f"n_inputs={self.n_inputs}",
            f"width={self.width}",
            f"classes={self.classes}",
            f"dtype={self.dtype}",
        ]
        parts += [k for k in _OPTIONAL if getattr(self, k) is not None]
        return f"JacobianSet({', '.join(parts)})"

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(
            f"<tr><td><code>{esc(k)}</code></td><td>{esc(str(v.shape))}</td><td>{esc(str(v.dtype))}</td></tr>"
            for k, v in self._arrays().items()
        )
        meta = "".join(
            f"<tr><td><code>{esc(str(k))}</code></td><td>{esc(json.dumps(v))}</td></tr>"
            for k, v in self.meta.items()
        )
        meta_table = (
            f"<table><thead><tr><th>meta</th><th>value</th></tr></thead><tbody>{meta}</tbody></table>"
            if meta
            else ""
        )
        return (
            f"<div><strong>{esc(repr(self))}</strong>"
            f"<table><thead><tr><th>key</th><th>shape</th><th>dtype</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>{meta_table}</div>"
        )

    # --------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write the set to ``path`` as a ``.npz`` file, atomically.

        The archive is written to a temporary file in the same folder, flushed,
        fsynced and moved into place with ``os.replace``: an interrupted write never
        leaves a partial file under ``path`` and removes its temporary file. The file
        is written at exactly ``path`` (no ``.npz`` suffix is added).

        Parameters
        ----------
        path : str or os.PathLike
            Destination. Its folder must exist.

        Returns
        -------
        pathlib.Path
            The path written.

        Raises
        ------
        TypeError
            If ``path`` is not a str or os.PathLike (e.g. None).
        ValueError
            If ``path`` is the empty string.
        IsADirectoryError
            If ``path`` is a folder.
        FileNotFoundError
            If the folder of ``path`` does not exist (nothing is written).

        Notes
        -----
        The temporary file is ``.<name>.ramodel-tmp.<pid>.<random>`` in the target folder;
        one left by a killed process is removed by the next save to the same path.

        Examples
        --------
        >>> import numpy as np, tempfile, os
        >>> js = JacobianSet(labels=[0, 1], classes=2, jacobians=np.eye(3)[None, None].repeat(2, 1))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     p = js.save(os.path.join(tmp, "net.npz"))
        ...     JacobianSet.load(p).jacobians.shape
        (1, 2, 3, 3)
        """
        arrays = {
            "format": np.array(FORMAT),
            "meta": np.array(json.dumps(self.meta, allow_nan=False, sort_keys=True)),
            "classes": np.array(self.classes, dtype=np.int64),
            **self._arrays(),
        }
        # A file object, because np.savez appends ".npz" to string paths.
        path = atomic_write(path, lambda fh: np.savez(fh, **arrays), action="save to")
        return path

    @classmethod
    def load(cls, source: str | os.PathLike | BinaryIO, *, max_bytes: int | None = None) -> JacobianSet:
        """Read and validate a Jacobian file.

        Parameters
        ----------
        source : str, os.PathLike or binary file object
            A ``.npz`` file written by :meth:`save` or any exporter following
            ``spec/FORMAT.md``.
        max_bytes : int, optional
            Cap on the array data the file may inflate to (the sum over its members),
            checked against the sizes the archive declares before anything is inflated.
            Default :data:`MAX_LOAD_BYTES` (8 GiB). Raise it for larger files.

        Returns
        -------
        JacobianSet

        Raises
        ------
        FileNotFoundError, PermissionError, IsADirectoryError
            If ``source`` is a path that cannot be opened.
        ValueError
            If the file is not a valid archive (not a zip, truncated, corrupt, bad
            CRC, a member holding pickled objects) or breaks a rule of the format
            (missing key, wrong dtype or rank, inconsistent sizes, NaN/Inf, labels
            out of range, unknown format version). The message names the file and
            the key.

        Warns
        -----
        UserWarning
            If the file holds keys the format does not define; they are ignored.

        Examples
        --------
        >>> import io, numpy as np
        >>> buf = io.BytesIO(b"PK not really a zip")
        >>> try:
        ...     JacobianSet.load(buf)
        ... except ValueError as err:
        ...     print(str(err)[:60])
        <BytesIO>: not a readable ramodel Jacobian file (.npz): corr
        """
        if max_bytes is None:
            max_bytes = MAX_LOAD_BYTES
        max_bytes = check_int("max_bytes", max_bytes, minimum=0)
        if isinstance(source, (str, os.PathLike)):
            name = os.fspath(source)
            with open(name, "rb") as fh:
                return cls._load_from(fh, name, max_bytes)
        if not callable(getattr(source, "read", None)):
            raise TypeError(f"source must be a path or a binary file object, got {type(source).__name__}")
        return cls._load_from(source, getattr(source, "name", None) or f"<{type(source).__name__}>", max_bytes)

    @classmethod
    def _load_from(cls, fh: BinaryIO, name: str, max_bytes: int) -> JacobianSet:
        where = f"{name}:"
        try:
            raw, unknown = _read_npz(fh, max_bytes)
        except _NpzError as exc:
            raise ValueError(f"{where} {exc}") from exc
        except MemoryError:
            raise ValueError(f"{where} not enough memory to inflate its arrays; free memory or load it on a "
                             "larger machine") from None
        except Exception as exc:
            # zipfile and the npy reader raise a dozen types on corrupt input
            # (BadZipFile, EOFError, NotImplementedError, RuntimeError, zlib.error, ...);
            # all of them mean the bytes are not a readable archive.
            raise ValueError(
                f"{where} not a readable ramodel Jacobian file (.npz): corrupt, truncated or not "
                f"a zip archive ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            fields = _fields_from_file(raw, name, unknown)
            return cls(**fields)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where} {exc}") from exc


class _NpzError(Exception):
    """A readable archive whose members break the npy rules (message is final)."""


def _read_header(fp, key: str) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise _NpzError(f"member {key!r} uses .npy format version {version}; expected 1.0 or 2.0")
    if dtype.hasobject:
        raise _NpzError(
            f"member {key!r} holds Python objects (a pickled object array, dtype {dtype}); "
            "Jacobian files hold only numeric and string arrays and are never unpickled"
        )
    return shape, fortran, dtype


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, bool, np.dtype, int]:
    """The npy header of a member, checked against the size the archive declares (nothing else is inflated)."""
    key = info.filename[:-4]
    with zf.open(info) as fp:
        shape, fortran, dtype = _read_header(fp, key)
        offset = fp.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    stored = info.file_size - offset
    if nbytes != stored:
        raise _NpzError(
            f"member {key!r} declares shape {shape} of {dtype} ({nbytes} bytes) but stores "
            f"{stored} bytes (corrupt header or data)"
        )
    return shape, fortran, dtype, offset


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, header) -> np.ndarray:
    key = info.filename[:-4]
    shape, fortran, dtype, offset = header
    nbytes = info.file_size - offset
    with zf.open(info) as fp:
        fp.read(offset)
        data = fp.read(nbytes)
        # Reading to the end makes zipfile check the member's CRC-32.
        if len(data) != nbytes or fp.read(1):
            raise _NpzError(f"member {key!r} is truncated or has trailing bytes (corrupt archive)")
    a = np.frombuffer(data, dtype=dtype)
    a = a.reshape(shape, order="F" if fortran else "C")
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
        a.flags.writeable = False
    return a


def _check_declared_sizes(infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    """Refuse sizes the data cannot back, and totals above the cap, before inflating anything."""
    total = 0
    for info in infos:
        key = info.filename[:-4]
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise _NpzError(f"member {key!r} is stored uncompressed but declares {info.file_size} bytes for "
                                f"{info.compress_size} stored (corrupt archive)")
        elif info.file_size > _MAX_INFLATE_RATIO * info.compress_size + 4096:
            raise _NpzError(
                f"member {key!r} declares {info.file_size} bytes from {info.compress_size} compressed bytes, "
                f"more than {_MAX_INFLATE_RATIO}:1, beyond what deflate can produce (corrupt archive or a zip bomb)"
            )
        total += info.file_size
    if total > max_bytes:
        raise _NpzError(
            f"its arrays declare {total} bytes ({total / 2**30:.3g} GiB), above the cap max_bytes={max_bytes} "
            f"({max_bytes / 2**30:.3g} GiB); nothing was inflated. Pass JacobianSet.load(..., max_bytes=N) "
            "to load a larger file"
        )


def _check_header_shapes(headers: dict[str, tuple]) -> None:
    """The FORMAT.md ranks, float dtypes and the common N of the members, from their headers alone."""
    for key, (shape, _, dtype, _) in headers.items():
        if key in _FLOAT_KEYS and dtype.newbyteorder("=") not in _FLOAT_DTYPES:
            raise _NpzError(f"{key!r} must be float32 or float64, got dtype {dtype}")
        want = _RANKS.get(key)
        if want is not None and len(shape) not in want:
            raise _NpzError(f"{key!r} must have {' or '.join(map(str, want))} dimensions, got shape {shape}")
    if "labels" in headers and len(headers["labels"][0]) == 1:
        (n,) = headers["labels"][0]
        for key in ("jacobians", "U", "S", "V", "representations"):
            if key in headers and n is not None and headers[key][0][1] != n:
                raise _NpzError(f"{key!r} must have shape with axis 1 = N = {n} (the length of 'labels'), "
                                f"got {headers[key][0]}")


def _check_entry_count(fh: BinaryIO, zf: zipfile.ZipFile) -> None:
    # zipfile walks the central directory by its byte size and never compares the
    # number of entries with the end record's count, so a corrupt comment or extra
    # field length in one entry silently swallows the entries after it.
    fh.seek(0, os.SEEK_END)
    end = fh.tell() - 22 - len(zf.comment)
    fh.seek(max(end, 0))
    record = fh.read(22)
    if end < 0 or len(record) != 22 or record[:4] != b"PK\x05\x06":
        raise _NpzError("corrupt zip end-of-central-directory record")
    count = int.from_bytes(record[10:12], "little")
    # 0xFFFF means the count lives in the zip64 record (more than 65534 members).
    if count != 0xFFFF and count != len(zf.infolist()):
        raise _NpzError(
            f"corrupt zip central directory: the end record lists {count} members but "
            f"{len(zf.infolist())} could be read"
        )


def _read_npz(fh: BinaryIO, max_bytes: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """The known members as arrays, and the names of the members skipped (never inflated)."""
    with zipfile.ZipFile(fh) as zf:
        _check_entry_count(fh, zf)
        known: dict[str, zipfile.ZipInfo] = {}
        unknown: list[str] = []
        names = set()
        for info in zf.infolist():
            if info.filename in names:
                raise _NpzError(f"member {info.filename[:-4] if info.filename.endswith('.npy') else info.filename!r}"
                                " appears twice in the archive")
            names.add(info.filename)
            key = info.filename[:-4] if info.filename.endswith(".npy") else None
            if key in _KNOWN:
                known[key] = info
            else:
                # Skipped without inflating; opening it checks its local header against the
                # directory (a corrupt name there must not turn a known member into an unknown one).
                with zf.open(info):
                    pass
                unknown.append(key if key is not None else info.filename)
        _check_declared_sizes(list(known.values()), max_bytes)
        headers = {key: _member_header(zf, info) for key, info in known.items()}
        _check_header_shapes(headers)
        return {key: _read_member(zf, info, headers[key]) for key, info in known.items()}, unknown


def _string_scalar(raw: dict, key: str) -> str:
    a = raw[key]
    if a.dtype.kind != "U" or a.ndim != 0:
        raise ValueError(f"{key!r} must be a 0-d str array, got dtype {a.dtype} and shape {a.shape}")
    return str(a[()])


def _fields_from_file(raw: dict, name: str, unknown: list[str] = ()) -> dict[str, Any]:
    if "format" not in raw:
        raise ValueError(f"missing required key 'format' (expected {FORMAT!r}); keys present: {sorted(raw)}")
    fmt = _string_scalar(raw, "format")
    match = _FORMAT_RE.fullmatch(fmt)
    if match is None:
        raise ValueError(f"'format' must be {FORMAT!r}, got {fmt!r} (not a ramodel Jacobian file)")
    if fmt not in FORMAT_VERSIONS:
        raise ValueError(
            f"'format': unsupported version {fmt!r}; this reader knows {', '.join(map(repr, FORMAT_VERSIONS))}"
        )
    for key in _REQUIRED:
        if key not in raw:
            raise ValueError(f"missing required key {key!r}")
    unknown = sorted(unknown)
    if unknown:
        warnings.warn(
            f"{name}: ignoring unknown keys {unknown}; the format defines {list(_KNOWN)}",
            UserWarning,
            stacklevel=4,
        )
    text = _string_scalar(raw, "meta")

    def reject_constant(c: str):
        raise ValueError(f"{c} is not strict JSON")

    try:
        meta = json.loads(text, parse_constant=reject_constant)
    except ValueError as exc:
        raise ValueError(f"'meta' must be a JSON object string: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"'meta' must be a JSON object, got JSON {type(meta).__name__}")

    classes = raw["classes"]
    if classes.dtype != np.int64 or classes.ndim != 0:
        raise ValueError(f"'classes' must be a 0-d int64 array, got dtype {classes.dtype} and shape {classes.shape}")
    labels = raw["labels"]
    if labels.dtype != np.int64:
        raise ValueError(f"'labels' must be int64, got dtype {labels.dtype}")
    fields: dict[str, Any] = {"labels": labels, "classes": int(classes[()]), "meta": meta}
    for key in _FLOAT_KEYS:
        if key in raw:
            fields[key] = raw[key]
    return fields
