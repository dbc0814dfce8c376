"""Grids of simulations: ``sweep`` runs them and returns a tidy table, one row per run.

Design constraints:

- Any :class:`concurrent.futures.Executor` runs the grid: a local process pool by default,
  ``"serial"`` (runs one after the other in this process, lazily) for debugging and
  one-core machines, or a Dask ``distributed`` client's ``get_executor()`` for a
  cluster. Each task gets a plain dict and returns a plain dict, so nothing heavy is
  pickled.
- Everything that would make every run fail (a misspelt option, ``progress="yes"``, a
  bad option value) is refused before the first run. A run that fails on its own
  becomes a row holding its error message; it never kills the sweep. A run that stops
  before reaching ``tol`` is a failed row too, unless the caller passes
  ``allow_unconverged=True``.
- With ``out=``, every finished row is written as it completes: the CSV (the user's
  view, rewritten atomically) and a typed JSON-lines record beside it
  (``<out>.jsonl``, appended and fsynced). ``kill -9`` loses at most the runs in
  progress; ``KeyboardInterrupt`` stops the sweep at once and keeps every finished row.
  Calling ``sweep`` again with the same ``out`` resumes: finished rows are kept, failed,
  missing, damaged or edited ones are rerun (see :func:`sweep`).
- Rows come back in grid order, whatever order the runs finish in.
- RA4 across models is fitted from the table: ``log sigma1_mean = a + b log L`` per group
  of runs that differ only in depth and seed.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import contextlib
import csv
import importlib
import inspect
import io
import itertools
import json
import math
import os
import pathlib
import time
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._io import atomic_write_text, check_destination
from ._progress import progress_bar
from ._validation import check_keywords

__all__ = [
    "GRID_AXES",
    "SerialExecutor",
    "SweepResult",
    "check_resume",
    "check_runs",
    "grid_configs",
    "import_modules",
    "load_grid",
    "make_executor",
    "record_path",
    "run_key",
    "run_one",
    "sweep",
]

#: Columns every row has, before the metric columns.
CONFIG_COLUMNS = ("depth", "classes", "width", "skip", "seed")
RUN_COLUMNS = ("converged", "trivial", "grad_norm", "steps", "seconds", "error")
THEOREM_COLUMNS = ("T1", "T2", "T3")
VERDICT_COLUMNS = ("RA1", "RA2", "RA3", "RA4")
#: ``simulate`` options that are not part of a run's key (arrays).
RUN_KEY_EXCLUDED = ("inputs", "labels")
#: Format tag of every line of the typed row record.
RECORD_FORMAT = "ramodel.sweep-row/1"
#: The ``error`` of a run that stopped before reaching ``tol``.
NOT_CONVERGED = "NotConverged"


class SerialExecutor(cf.Executor):
    """Runs each task at submission, in this process (for debugging and small grids).

    :func:`sweep` recognises it and runs the grid lazily, one run at a time, writing each
    row as it finishes. ``KeyboardInterrupt`` and ``SystemExit`` are never captured in a
    future: they propagate from :meth:`submit`.
    """

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future


def run_one(config: dict) -> dict:
    """Solve one configuration and flatten its report into a row (never raises an Exception).

    Parameters
    ----------
    config : dict
        Keyword arguments of :func:`ramodel.simulate`.

    Returns
    -------
    dict
        The config, run information (``converged``, ``trivial``, ``grad_norm``, ``steps``,
        ``seconds``, ``error``), theorem verdicts ``T1``–``T3``, RA verdicts ``RA1``–``RA4``
        and the headline value of every RA/NC metric. ``KeyboardInterrupt`` propagates.
    """
    from .simulation import simulate
    from .summary import theorem_checks

    row: dict[str, Any] = {k: config.get(k) for k in CONFIG_COLUMNS}
    row.update({k: v for k, v in config.items() if k not in CONFIG_COLUMNS})
    row["skip"] = config.get("skip", "identity") if isinstance(config.get("skip", "identity"), str) else "explicit"
    t0 = time.perf_counter()
    try:
        sim = simulate(**config)
        row["width"] = sim.width
        row.update(converged=sim.converged, trivial=sim.is_trivial, grad_norm=sim.grad_norm, steps=sim.steps,
                   error=None)
        if not sim.converged:
            row["message"] = sim.message
        for chk in theorem_checks(sim):
            row[chk.name] = chk.holds
        report = sim.report()
        for name in VERDICT_COLUMNS:
            row[name] = report.verdicts.get(name)
        for name, metric in report.metrics.items():
            row[name] = float(metric.value)
    except Exception as exc:  # a failing run is a row, not a crash
        row.update(converged=False, grad_norm=None, steps=None, error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = time.perf_counter() - t0
    return _plain(row)


# ------------------------------------------------------------------ values and keys
def _plain_value(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, Mapping):
        return {str(k): _plain_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain_value(x) for x in v]
    item = getattr(v, "item", None)  # numpy scalars
    if callable(item):
        with contextlib.suppress(Exception):
            return _plain_value(item())
    return str(v)


def _plain(row: Mapping) -> dict:
    """The row as JSON types (what the typed record stores), so fresh and resumed rows agree."""
    return {str(k): _plain_value(v) for k, v in row.items()}


def _simulate_defaults() -> dict[str, Any]:
    from .simulation import simulate

    return {n: p.default for n, p in inspect.signature(simulate).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _simulate_params() -> list[str]:
    from .simulation import simulate

    return list(inspect.signature(simulate).parameters)


def _canonical(value: Any) -> Any:
    """A comparable form of a configuration value, whether a Python object or CSV text."""
    if isinstance(value, str):
        if value == "":
            return None
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            return value
        if isinstance(value, str):
            return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        with contextlib.suppress(Exception):
            v = tolist()
            if not hasattr(v, "tolist"):
                return _canonical(v)
    return str(value)


def run_key(config: Mapping[str, Any]) -> str:
    """The identity of one sweep run: its ``simulate`` options with the defaults filled in.

    ``config`` holds options of :func:`ramodel.simulate` (Python values, or the CSV text
    of a sweep row; ``""`` is None). Every option except :data:`RUN_KEY_EXCLUDED` counts;
    a missing or None option takes simulate's default, ``width`` defaults to
    ``max(16, classes)`` and ``tol`` to ``DEFAULT_TOL[dtype]`` (simulate's rules), one
    ``weight_decay`` number means the pair, and values are compared as literals (numbers
    as floats), so ``1e-2`` and ``"0.01"`` give the same key. Columns that are not
    simulate options (metrics, timings, the error) are ignored.

    Returns
    -------
    str
        Canonical JSON of the options.

    Examples
    --------
    >>> run_key({"depth": 4, "classes": 3, "seed": 0}) == run_key(
    ...     {"depth": "4", "classes": "3", "width": "16", "seed": "0", "skip": "identity",
    ...      "weight_decay": "[0.01, 0.01]", "RA1": "True"})
    True
    """
    from .simulation import DEFAULT_TOL

    defaults = _simulate_defaults()
    key = {}
    for name in _simulate_params():
        if name in RUN_KEY_EXCLUDED:
            continue
        v = _canonical(config.get(name))
        if v is None:
            v = _canonical(defaults.get(name))
        key[name] = v
    if isinstance(key.get("weight_decay"), float):  # simulate reads one number as (lambda, lambda)
        key["weight_decay"] = [key["weight_decay"]] * 2
    # simulate's own rules for two None defaults, so an explicit default is the same run.
    if key.get("width") is None and isinstance(key.get("classes"), float):
        key["width"] = max(16.0, key["classes"])
    if key.get("tol") is None and key.get("dtype") in DEFAULT_TOL:
        key["tol"] = float(DEFAULT_TOL[key["dtype"]])
    return json.dumps(key, sort_keys=True)


def _fill_defaults(row: Mapping[str, Any], columns: Sequence[str]) -> dict:
    """``row`` with every empty option cell set to the value the run used (simulate's default).

    Rows written by different invocations then agree cell by cell on equal runs (an explicit
    ``tol=1e-10`` and the float64 default), so grouping the CSV by its columns, as
    :meth:`SweepResult.depth_slope` does, groups equal models together.
    """
    from .simulation import DEFAULT_TOL

    defaults = _simulate_defaults()
    out = dict(row)
    for c in columns:
        if c not in defaults or out.get(c) not in (None, ""):
            continue
        if c == "width":
            try:
                value = max(16, int(float(out.get("classes"))))
            except (TypeError, ValueError):
                continue
        elif c == "tol":
            value = DEFAULT_TOL.get(out.get("dtype") or defaults["dtype"])
        else:
            value = defaults[c]
        if value is not None:
            out[c] = list(value) if isinstance(value, tuple) else value
    return out


def _order_columns(rows: Iterable[Mapping], extra: Sequence[str] = ()) -> list[str]:
    """Column order: config, other simulate options, run info, verdicts, then metrics."""
    seen: list[str] = list(extra)
    for r in rows:
        for c in r:
            if c not in seen:
                seen.append(c)
    params = set(_simulate_params())
    fixed = (*RUN_COLUMNS, *THEOREM_COLUMNS, *VERDICT_COLUMNS)
    head = [c for c in CONFIG_COLUMNS if c in seen]
    options = [c for c in seen if c in params and c not in CONFIG_COLUMNS]
    tail = [c for c in fixed if c in seen]
    rest = [c for c in seen if c not in head + options + tail]
    return head + options + tail + rest


def _parse_cell(text: str) -> Any:
    """A CSV cell back to a Python value (``""`` is None)."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text[:1] in "[{(":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
    return text


def _fmt_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


def _is_failed(row: Mapping) -> bool:
    return bool(row.get("error"))


# ---------------------------------------------------------------------------- table
@dataclass(frozen=True, eq=False)
class SweepResult:
    """The tidy table of a sweep: one row per run.

    Attributes
    ----------
    rows : tuple of dict
        One dict per run, in grid order. Failed runs (an exception, or no convergence
        to ``tol`` unless the sweep allowed it) have ``error`` set.
    columns : tuple of str
        Every column that occurs in some row, config first.
    kept : int
        Rows taken from an earlier run of the same ``out`` file instead of being computed.
    other_rows : tuple of dict
        Rows of ``out`` that belong to another grid: kept in the file, not in ``rows``.
    """

    rows: tuple
    columns: tuple
    kept: int = 0
    other_rows: tuple = ()

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def failed(self) -> tuple:
        """The rows whose run raised or did not converge (``error`` set)."""
        return tuple(r for r in self.rows if _is_failed(r))

    @property
    def unconverged(self) -> tuple:
        """The rows whose run ended without reaching ``tol`` (failed or allowed)."""
        return tuple(r for r in self.rows if r.get("converged") is False and not (
            r.get("error") and not str(r["error"]).startswith(NOT_CONVERGED)))

    @property
    def trivial(self) -> tuple:
        """The rows whose run ended at the trivial critical point ``J = 0``."""
        return tuple(r for r in self.rows if r.get("trivial") is True)

    def column(self, name: str) -> list:
        """One column as a list (None where a row lacks it)."""
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns are {list(self.columns)}")
        return [r.get(name) for r in self.rows]

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The table as CSV text; with ``path``, also written there atomically."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for r in self.rows:
            writer.writerow([_fmt_cell(r.get(c)) for c in self.columns])
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def as_read(self) -> SweepResult:
        """The table as its CSV file reads back: ``rows`` then ``other_rows``, every cell parsed from its text.

        Kept rows (read from the file) and new rows (computed now) then have the same
        cell types, so the two print and compare alike; ``kept`` is carried over.
        """
        done = list(self.rows) + list(self.other_rows)
        cols = _order_columns(done)
        text = SweepResult(rows=tuple(_fill_defaults(r, cols) for r in done), columns=tuple(cols)).to_csv()
        reader = csv.DictReader(io.StringIO(text))
        parsed = tuple({k: _parse_cell(v) for k, v in r.items()} for r in reader)
        return SweepResult(rows=parsed, columns=tuple(reader.fieldnames or ()), kept=self.kept)

    def to_pandas(self):
        """The table as a :class:`pandas.DataFrame` (needs pandas: ``pip install 'ramodel[pandas]'``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("SweepResult.to_pandas needs pandas: pip install 'ramodel[pandas]'") from None
        return pd.DataFrame(list(self.rows), columns=list(self.columns))

    def depth_slope(self, *, by: Sequence[str] | None = None, confidence: float = 0.95,
                    include_unconverged: bool = False) -> list:
        """Fit RA4's ``log sigma1_mean = a + b log L`` in each group of runs.

        Parameters
        ----------
        by : sequence of str, optional
            Columns that define a group; each must be a column of the table. Default:
            every config column except ``depth`` and ``seed`` (seeds are replicates of one
            model family).
        confidence : float, default 0.95
        include_unconverged : bool, default False
            Also fit runs that stopped before reaching ``tol`` (only those a sweep with
            ``allow_unconverged=True`` kept as successful rows). Failed runs are never fitted.

        Returns
        -------
        list of (dict, DepthLawFit)
            The group's key values and its fit. Groups with fewer than three successful
            runs at two or more depths are skipped.
        """
        try:
            from .scaling import fit_depth_law
        except ImportError:  # pragma: no cover - older layout
            from .metrics import fit_depth_slope as fit_depth_law

        if not isinstance(include_unconverged, bool):
            raise TypeError(f"include_unconverged must be a bool, got {include_unconverged!r}")
        if not (isinstance(confidence, (int, float)) and not isinstance(confidence, bool) and 0 < confidence < 1):
            raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
        if by is None:
            by = [c for c in self.config_columns if c not in ("depth", "seed")]
        else:
            if isinstance(by, str):
                by = [by]
            by = list(by)
            unknown = [c for c in by if c not in self.columns]
            if unknown:
                raise ValueError(f"by names column(s) {unknown} that the table does not have; "
                                 f"columns are {list(self.columns)}")
        groups: dict[tuple, list[dict]] = {}
        for r in self.rows:
            if _is_failed(r) or r.get("sigma1_mean") is None or r.get("depth") is None:
                continue
            if r.get("converged") is False and not include_unconverged:
                continue
            groups.setdefault(tuple(_hashable(r.get(c)) for c in by), []).append(r)
        fits = []
        for key, rows in groups.items():
            depths = [r["depth"] for r in rows]
            if len(rows) < 3 or len(set(depths)) < 2:
                continue
            fit = fit_depth_law(depths, [r["sigma1_mean"] for r in rows], confidence=confidence)
            fits.append((dict(zip(by, key)), fit))
        return fits

    @property
    def config_columns(self) -> tuple:
        """The columns that describe a run's configuration."""
        skip = set(RUN_COLUMNS) | set(THEOREM_COLUMNS) | set(VERDICT_COLUMNS)
        metric_start = self.columns.index("T1") if "T1" in self.columns else len(self.columns)
        return tuple(c for c in self.columns[:metric_start] if c not in skip and c != "message")

    def summary(self) -> str:
        """One line: runs, kept, computed, failed (of which not converged), trivial solutions."""
        failed = self.failed
        nc = sum(1 for r in failed if str(r.get("error", "")).startswith(NOT_CONVERGED))
        allowed = sum(1 for r in self.rows if r.get("converged") is False and not _is_failed(r))
        parts = [f"{len(self.rows)} runs: {self.kept} kept, {len(self.rows) - self.kept} computed",
                 f"{len(failed)} failed" + (f" ({nc} did not converge)" if nc else "")]
        if allowed:
            parts.append(f"{allowed} did not converge (allowed)")
        if self.trivial:
            parts.append(f"{len(self.trivial)} at the trivial critical point J = 0")
        return ", ".join(parts)

    def __str__(self) -> str:
        show = [c for c in (*self.config_columns, "converged", "grad_norm", "sigma1_mean", "RA2", "RA3", "error")
                if c in self.columns]
        lines = ["  ".join(f"{c:>12}" for c in show)]
        for r in self.rows:
            cells = []
            for c in show:
                v = r.get(c)
                cells.append(f"{v:>12.4g}" if isinstance(v, float) else f"{v if v is not None else ''!s:>12}"[:40])
            lines.append("  ".join(cells))
        return "\n".join(lines)


def _hashable(v):
    return tuple(v) if isinstance(v, list) else (tuple(sorted(v.items())) if isinstance(v, dict) else v)


# ------------------------------------------------------------------ the record files
def record_path(out: str | os.PathLike) -> pathlib.Path:
    """The typed row record written beside a sweep CSV: ``<out>.jsonl``."""
    out = pathlib.Path(out)
    return out.with_name(out.name + ".jsonl")


def _json_line(key: str, row: Mapping) -> str:
    return json.dumps({"format": RECORD_FORMAT, "key": key, "row": row}, sort_keys=True, allow_nan=True) + "\n"


def _read_records(path: pathlib.Path) -> dict[str, dict]:
    """Typed rows by run key; a line that is not complete, valid JSON of this format is ignored."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValueError(f"cannot read the sweep record {str(path)!r}: {exc}") from None
    out: dict[str, dict] = {}
    for line in data.split(b"\n")[:-1]:  # the last piece has no newline: unfinished, never trusted
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue
        if (isinstance(rec, dict) and rec.get("format") == RECORD_FORMAT and isinstance(rec.get("key"), str)
                and isinstance(rec.get("row"), dict)):
            out[rec["key"]] = rec["row"]
    return out


def _read_csv_rows(path: pathlib.Path) -> tuple[list[str], list[tuple[dict, bool]]]:
    """Header and ``(row, complete)`` pairs of a sweep CSV.

    A row is complete when it has exactly one cell per header column and ends with a
    newline: a file cut in the middle of its last line gives an incomplete last row,
    whatever cell the cut fell in.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot resume from out={str(path)!r}: {exc}; pass resume=False to overwrite it") from None
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise ValueError(f"cannot resume from out={str(path)!r}: not a readable CSV ({exc}); "
                         "pass resume=False to overwrite it") from None
    if not records:
        return [], []
    header = records[0]
    missing = [c for c in (*CONFIG_COLUMNS, "error") if c not in header]
    if missing:
        raise ValueError(f"out={str(path)!r} is not a ramodel sweep CSV (no column(s) {missing}); "
                         "pass resume=False to overwrite it or choose another file")
    rows = []
    body = [r for r in records[1:] if r]
    for j, cells in enumerate(body):
        complete = len(cells) == len(header) and (j < len(body) - 1 or text.endswith("\n"))
        rows.append((dict(zip(header, cells)), complete))
    return header, rows


def _csv_view(row: Mapping, columns: Sequence[str]) -> list[str]:
    filled = _fill_defaults(row, columns)
    return [_fmt_cell(filled.get(c)) for c in columns]


def _load_previous(out: pathlib.Path, wanted: set[str], allow_unconverged: bool):
    """Rows of an earlier run of ``out``: (header, kept rows by key, rows of other grids)."""
    header, csv_rows = _read_csv_rows(out)
    typed = _read_records(record_path(out))
    kept: dict[str, dict] = {}
    outside: list[dict] = []
    for cells, complete in csv_rows:
        key = run_key(cells)
        rec = typed.get(key)
        if rec is not None and _csv_view(rec, header) == [cells.get(c, "") for c in header]:
            row = rec  # the typed values, checked cell by cell against the user's view
        elif rec is None and complete:
            row = {c: _parse_cell(v) for c, v in cells.items()}  # a CSV without its record
        else:
            row = None  # damaged (cut, edited, or disagreeing with its record): rerun
        if key not in wanted:
            outside.append(row if row is not None else dict(cells))  # another grid's row: keep as it is
            continue
        if row is None or key in kept or _is_failed(row):
            continue
        if row.get("converged") is False and not allow_unconverged:
            continue
        kept[key] = row
    return header, kept, outside


# --------------------------------------------------------------------------- checks
def _as_list(name: str, values: Any) -> list:
    if values is None:
        return [None]
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        return [values]
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def _describe(cfg: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items() if k in CONFIG_COLUMNS)


def probe(config: Mapping[str, Any]) -> None:
    """Raise the ``ValueError``/``TypeError`` that ``simulate(**config)`` would raise on its options.

    It builds the problem without solving it (a start whose gradient is below a huge
    ``tol``), so it costs milliseconds whatever the depth.
    """
    from ._validation import check_positive_float
    from .simulation import simulate

    if config.get("tol") is not None:
        check_positive_float("tol", config["tol"])
    if config.get("max_steps") is not None:
        from ._validation import check_int

        check_int("max_steps", config["max_steps"], minimum=1)
    try:
        simulate(**{**config, "max_steps": 1, "tol": 1e300})
    except (ValueError, TypeError):
        raise
    except Exception:  # noqa: BLE001 - a failure of the run itself (divergence) is the run's row
        pass


def _probe_groups(configs: Sequence[dict], pending: Sequence[int]) -> dict[int, str]:
    """Invalid pending runs (index -> error), probing one run per group of equal options.

    A group is the runs that differ only in depth and seed; it is probed with its first
    run of valid depth. Raises the first error when every group is invalid (nothing
    could run). A run that is invalid on its own (``depth=0`` in a grid) fails as its row.
    """
    groups: dict[str, list[int]] = {}
    for i in pending:
        cfg = configs[i]
        sig = json.dumps(_canonical({k: v for k, v in cfg.items() if k not in ("depth", "seed")}), sort_keys=True,
                         default=str)
        groups.setdefault(sig, []).append(i)
    bad: dict[int, str] = {}
    first_error: Exception | None = None
    for members in groups.values():
        good_depth = [i for i in members if isinstance(configs[i].get("depth"), int) and configs[i]["depth"] >= 1]
        i = (good_depth or members)[0]
        try:
            probe(configs[i])
        except (ValueError, TypeError) as exc:
            first_error = first_error or type(exc)(f"run {_describe(configs[i])} is invalid: {exc}")
            for j in members:
                bad[j] = f"{type(exc).__name__}: {exc}"
    if groups and len(bad) == len(pending) and first_error is not None:
        raise first_error
    return bad


def _stop_pool(executor) -> None:
    """Stop a local process pool now: cancel what has not started, end the running workers."""
    with contextlib.suppress(Exception):
        executor.shutdown(wait=False, cancel_futures=True)
    for proc in list((getattr(executor, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            proc.terminate()


# ---------------------------------------------------------------------- grids, executors
#: The grid axes of :func:`sweep` and the :func:`ramodel.simulate` option each one sets.
GRID_AXES = types.MappingProxyType({"depths": "depth", "classes": "classes", "widths": "width", "skips": "skip",
                                    "seeds": "seed"})


def load_grid(path: str | os.PathLike) -> tuple[dict[str, list], dict[str, Any]]:
    """Read a grid file (TOML): its axes and the options passed to every run.

    Parameters
    ----------
    path : str or os.PathLike
        A TOML file whose keys are the axes of :data:`GRID_AXES` (a value or a list)
        and options of :func:`ramodel.simulate` in its spelling, e.g.
        ``depths = [2, 4]``, ``classes = 3``, ``skip_params = { signed = true }``.

    Returns
    -------
    axes : dict of str to list
        The axes the file gives, each as a list.
    options : dict
        Everything else, as read.

    Raises
    ------
    ValueError
        The file is missing, is not TOML, or has a key that is neither an axis nor an
        option of :func:`ramodel.simulate` (the message lists both).
    """
    import tomllib

    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{str(path)!r}: no such file")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{str(path)!r}: not valid TOML ({exc})") from None
    options_allowed = set(_simulate_params()) - set(RUN_KEY_EXCLUDED) - set(GRID_AXES.values())
    unknown = sorted(k for k in data if k not in GRID_AXES and k not in options_allowed)
    if unknown:
        raise ValueError(f"{str(path)!r}: unknown key(s) {unknown}; use the grid axes {sorted(GRID_AXES)} and "
                         f"options of ramodel.simulate {sorted(options_allowed)}")
    axes = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in data.items() if k in GRID_AXES}
    return axes, {k: v for k, v in data.items() if k not in GRID_AXES}


def grid_configs(*, depths, classes, widths=None, skips="identity", seeds=0, **options) -> list[dict]:
    """The runs of a grid: one :func:`ramodel.simulate` configuration per point, in :func:`sweep`'s order.

    The order is the Cartesian product of depths, classes, widths, skips, seeds (the
    last varies fastest). A width of None is left out (simulate's default applies).

    Examples
    --------
    >>> [(c["depth"], c["seed"]) for c in grid_configs(depths=[2, 4], classes=3, seeds=[0, 1])]
    [(2, 0), (2, 1), (4, 0), (4, 1)]
    """
    configs = []
    for depth, n_classes, width, skip, seed in itertools.product(
            _as_list("depths", depths), _as_list("classes", classes), _as_list("widths", widths),
            _as_list("skips", skips), _as_list("seeds", seeds)):
        cfg = dict(depth=depth, classes=n_classes, skip=skip, seed=seed, **options)
        if width is not None:
            cfg["width"] = width
        configs.append(cfg)
    return configs


def check_runs(configs: Iterable[Mapping[str, Any]]) -> None:
    """Raise on the first run whose options :func:`ramodel.simulate` would reject, before any is solved.

    Stricter than :func:`sweep`'s own check (which makes an invalid group of runs failed
    rows and raises only when every run is invalid): one invalid group refuses the grid.
    Runs that differ only in seed are probed once (:func:`probe`, milliseconds each).

    Raises
    ------
    ValueError, TypeError
        ``run depth=..., classes=..., ... is invalid: <simulate's message>``.
    """
    seen = set()
    for cfg in configs:
        sig = json.dumps(_canonical({k: v for k, v in cfg.items() if k not in ("depth", "seed")}), sort_keys=True,
                         default=str)
        if sig in seen:
            continue
        seen.add(sig)
        try:
            probe(cfg)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"run {_describe(cfg)} is invalid: {exc}") from None


def check_resume(out: str | os.PathLike) -> None:
    """Raise ``ValueError`` when ``out`` exists and is not a sweep table :func:`sweep` can resume.

    The check :func:`sweep` makes with ``resume=True``, available before a grid is set up.
    """
    path = pathlib.Path(out)
    if path.exists():
        _read_csv_rows(path)


def import_modules(names: Iterable[str]) -> None:
    """Import each named module (one that registers a skip family, say); a worker initialiser."""
    for name in names:
        importlib.import_module(name)


def make_executor(*, workers: int | None = None, dask: str | None = None, imports: Sequence[str] = (),
                  runs: int | None = None):
    """An executor for :func:`sweep` and the function that releases it: ``(executor, close)``.

    ``close()`` waits for running work to finish; ``close(now=True)`` (after an interrupt)
    ends a local pool's workers at once.

    Parameters
    ----------
    workers : int, optional
        Local processes; default one per core, at most ``runs``. One gives a
        :class:`SerialExecutor` (runs in this process, nothing to release).
    dask : str, optional
        Address of a Dask scheduler (needs ``dask[distributed]``); ``close`` then
        disconnects, it never shuts the cluster down (it is not ours to stop).
    imports : sequence of str
        Modules every worker imports first: workers started by spawn or forkserver
        (and Dask workers) start empty, without the skip families they register.
    runs : int, optional
        The number of runs to execute, which caps ``workers``.

    Raises
    ------
    ImportError
        ``dask`` given without Dask installed (the message says what to install).
    ValueError
        ``workers`` below 1.
    """
    if dask:
        try:
            from dask.distributed import Client
        except ImportError:
            raise ImportError("a Dask executor needs Dask: pip install 'dask[distributed]'") from None
        client = Client(dask)
        if imports:
            client.run(import_modules, list(imports))
        return client.get_executor(), lambda *, now=False: client.close()
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    n = workers if workers is not None else (os.cpu_count() or 1)
    if runs is not None:
        n = min(n, max(runs, 1))
    if n == 1:
        return SerialExecutor(), lambda *, now=False: None
    pool = cf.ProcessPoolExecutor(max_workers=n, initializer=import_modules, initargs=(list(imports),))

    def close(*, now: bool = False) -> None:
        if now:  # interrupted: cancel what has not started and end the running workers
            _stop_pool(pool)
        else:
            pool.shutdown(cancel_futures=True)

    return pool, close


# ---------------------------------------------------------------------------- sweep
def sweep(
    *,
    depths: Iterable[int],
    classes: Iterable[int] | int,
    widths: Iterable[int | None] | int | None = None,
    skips: Iterable[Any] | str = "identity",
    seeds: Iterable[int] | int = 0,
    executor: cf.Executor | str | None = None,
    progress: bool | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = True,
    allow_unconverged: bool = False,
    **simulate_kwargs,
) -> SweepResult:
    """Run :func:`ramodel.simulate` over a grid and tabulate the results.

    Parameters
    ----------
    depths, classes, widths, skips, seeds : iterables (or a single value)
        The grid is their Cartesian product. ``widths=None`` uses simulate's default.
    executor : concurrent.futures.Executor, "serial" or None
        Where runs execute. None: a local :class:`~concurrent.futures.ProcessPoolExecutor`
        with one worker per core (scripts that call this must use the
        ``if __name__ == "__main__":`` guard on platforms that spawn); on a one-core
        machine, or for a single run, ``"serial"``. ``"serial"`` (or a
        :class:`SerialExecutor`): one run after the other in this process, each row
        written as it finishes. Any other executor, e.g.
        ``dask.distributed.Client(...).get_executor()``, is used as given and not shut
        down. A run whose worker died (a killed process) is a failed row, rerun on resume.
    progress : bool, optional
        A progress bar on stderr (tqdm, or one line per run without it). Default: only
        when stderr is a terminal.
    out : str or os.PathLike, optional
        A CSV file to write the table to, row by row as runs finish, with the typed
        record :func:`record_path` (``<out>.jsonl``) beside it.
    resume : bool, default True
        With ``out`` existing: keep its finished rows of this grid and run only the rest.
        A row is rerun when it failed, did not converge (unless ``allow_unconverged``),
        is missing from the CSV, or does not parse completely: a last line cut mid-way,
        a wrong number of cells, or cells that differ from the row's typed record (a
        damaged or hand-edited row). Rows of other grids in ``out`` are kept in the file
        (see :attr:`SweepResult.other_rows`). False: overwrite ``out``.
    allow_unconverged : bool, default False
        Keep runs that stopped before ``|grad Phi| <= tol`` as successful rows
        (``converged`` False, no ``error``). By default they are failed rows with
        ``error = "NotConverged: ..."``, excluded from the fits and counted in
        :meth:`SweepResult.summary`.
    **simulate_kwargs
        Passed to every run (e.g. ``branch_factors=2``, ``loss="cross_entropy"``); each
        name must be an option of :func:`ramodel.simulate`.

    Returns
    -------
    SweepResult

    Raises
    ------
    TypeError, ValueError
        Before the first run, for an unknown keyword, a bad ``progress``, ``resume``,
        ``allow_unconverged``, ``executor`` or ``out``, an ``out`` that is not a sweep
        CSV, or options that make every run invalid.
    KeyboardInterrupt
        At once, after the finished rows are written to ``out``.

    Examples
    --------
    >>> res = sweep(depths=[2, 4], classes=2, widths=4, executor="serial")
    >>> len(res), res.column("converged")
    (2, [True, True])
    """
    # ---- everything is checked before the first run
    axes = {"depth": "depths", "classes": "classes", "width": "widths", "skip": "skips", "seed": "seeds"}
    for name, axis in axes.items():
        if name in simulate_kwargs and name != axis:
            raise TypeError(f"sweep() takes the grid axis {axis}=, not {name}= (got {name}={simulate_kwargs[name]!r})")
    options = [n for n in _simulate_params() if n not in axes]
    check_keywords("sweep()", simulate_kwargs, options)
    for name, value in (("resume", resume), ("allow_unconverged", allow_unconverged)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None (only when stderr is a terminal), got {progress!r}")
    if out is not None:
        out = check_destination(out, action="write the sweep to", argument="out")
    if not (executor is None or executor == "serial" or isinstance(executor, cf.Executor)
            or callable(getattr(executor, "submit", None))):
        raise TypeError(f"executor must be a concurrent.futures.Executor, 'serial' or None, got {executor!r}")

    configs = grid_configs(depths=depths, classes=classes, widths=widths, skips=skips, seeds=seeds,
                           **simulate_kwargs)
    keys = [run_key(cfg) for cfg in configs]

    header: list[str] = []
    kept: dict[str, dict] = {}
    outside: list[dict] = []
    if out is not None and resume and out.exists():
        header, kept, outside = _load_previous(out, set(keys), allow_unconverged)
    pending = [i for i, k in enumerate(keys) if k not in kept]
    invalid = _probe_groups(configs, pending)

    rows: list[dict | None] = [kept.get(k) for k in keys]
    n_kept = sum(r is not None for r in rows)

    def finish(i: int, row: dict) -> dict:
        row = _plain(row)
        if row.get("converged") is False and not row.get("error") and not allow_unconverged:
            gn, tol = row.get("grad_norm"), configs[i].get("tol")
            if tol is None:
                from .simulation import DEFAULT_TOL

                tol = DEFAULT_TOL.get(configs[i].get("dtype") or "float64")
            row["error"] = (f"{NOT_CONVERGED}: |grad Phi| = {gn:.3g} did not reach tol"
                            + (f" {tol:g}" if isinstance(tol, (int, float)) else "")
                            + f" after {row.get('steps')} steps ({row.get('message', 'no message')}); "
                            "pass allow_unconverged=True (ramodel sweep --allow-unconverged) to keep it, or raise max_steps")
        return row

    # ---- the record files: rewritten once with what is kept, then appended row by row
    record = None
    if out is not None:
        typed = [(k, r) for k, r in zip(keys, rows) if r is not None]
        typed += [(run_key(r), r) for r in outside]
        atomic_write_text(record_path(out), "".join(_json_line(k, r) for k, r in typed),
                          action="write the sweep record to")
        record = open(record_path(out), "a", encoding="utf-8")

    def write_csv() -> None:
        if out is None:
            return
        done = [r for r in rows if r is not None] + outside
        cols = _order_columns(done, extra=header or (*CONFIG_COLUMNS, *RUN_COLUMNS))
        SweepResult(rows=tuple(_fill_defaults(r, cols) for r in done), columns=tuple(cols)).to_csv(out)

    def store(i: int, row: dict) -> None:
        rows[i] = row
        if record is not None:
            record.write(_json_line(keys[i], row))
            record.flush()
            os.fsync(record.fileno())
        write_csv()

    for i, message in invalid.items():
        store(i, finish(i, {**{k: configs[i].get(k) for k in CONFIG_COLUMNS},
                            **{k: v for k, v in configs[i].items() if k not in CONFIG_COLUMNS},
                            "converged": False, "grad_norm": None, "steps": None, "seconds": 0.0,
                            "error": message}))
    todo = [i for i in pending if i not in invalid]

    own = executor is None
    if executor is None and (len(todo) <= 1 or (os.cpu_count() or 1) == 1):
        executor = "serial"
    serial = executor == "serial" or isinstance(executor, SerialExecutor)
    if own and not serial:
        executor = cf.ProcessPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1))
    bar = progress_bar(progress, total=len(todo), desc="sweep", unit="run")
    interrupted = False
    futures: dict = {}
    try:
        write_csv()
        if serial:
            for i in todo:
                store(i, finish(i, run_one(configs[i])))
                if bar is not None:
                    bar.update(1)
        elif todo:
            futures = {executor.submit(run_one, configs[i]): i for i in todo}
            for fut in cf.as_completed(futures):
                i = futures[fut]
                try:
                    row = fut.result()
                except Exception as exc:  # the worker itself died (e.g. a killed process)
                    row = {**{k: configs[i].get(k) for k in CONFIG_COLUMNS},
                           **{k: v for k, v in configs[i].items() if k not in CONFIG_COLUMNS},
                           "converged": False, "grad_norm": None, "steps": None,
                           "error": f"worker lost ({type(exc).__name__}: {exc}); rerun to resume"}
                store(i, finish(i, row))
                if bar is not None:
                    bar.update(1)
    except BaseException:
        interrupted = True
        if not serial:
            if own:
                _stop_pool(executor)
            else:
                for fut in futures:
                    fut.cancel()
        raise
    finally:
        if bar is not None:
            bar.close()
        if record is not None:
            record.close()
        if own and not serial and not interrupted:
            executor.shutdown()
    columns = _order_columns(rows)
    return SweepResult(rows=tuple(rows), columns=tuple(columns), kept=n_kept, other_rows=tuple(outside))
