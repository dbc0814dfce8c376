"""Grids of simulations: ``sweep`` runs them and returns a tidy table, one row per run.

Design constraints:

- Any :class:`concurrent.futures.Executor` runs the grid: a local process pool by default,
  ``"serial"`` for debugging, or a Dask ``distributed`` client's ``get_executor()`` for a
  cluster. Each task gets a plain dict and returns a plain dict, so nothing heavy is pickled.
- A failing run becomes a row holding its error message. It never kills the sweep.
- Rows come back in grid order, whatever order the runs finish in.
- RA4 across models is fitted from the table: ``log sigma1_mean = a + b log L`` per group
  of runs that differ only in depth and seed.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import itertools
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._io import atomic_write_text

__all__ = ["SweepResult", "SerialExecutor", "sweep", "run_one"]

#: Columns every row has, before the metric columns.
CONFIG_COLUMNS = ("depth", "classes", "width", "skip", "seed")
RUN_COLUMNS = ("converged", "grad_norm", "steps", "seconds", "error")
THEOREM_COLUMNS = ("T1", "T2", "T3")
VERDICT_COLUMNS = ("RA1", "RA2", "RA3", "RA4")


class SerialExecutor(cf.Executor):
    """Runs each task at submission, in this process (for debugging and small grids)."""

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


def run_one(config: dict) -> dict:
    """Solve one configuration and flatten its report into a row (never raises).

    Parameters
    ----------
    config : dict
        Keyword arguments of :func:`ramodel.simulate`.

    Returns
    -------
    dict
        The config, run information (``converged``, ``grad_norm``, ``steps``,
        ``seconds``, ``error``), theorem verdicts ``T1``–``T3``, RA verdicts ``RA1``–``RA4``
        and the headline value of every RA/NC metric.
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
        row.update(converged=sim.converged, grad_norm=sim.grad_norm, steps=sim.steps, error=None)
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
    return row


def _fmt_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


@dataclass(frozen=True, eq=False)
class SweepResult:
    """The tidy table of a sweep: one row per run.

    Attributes
    ----------
    rows : tuple of dict
        One dict per run, in grid order. Failed runs have ``error`` set and no metrics.
    columns : tuple of str
        Every column that occurs in some row, config first.
    """

    rows: tuple
    columns: tuple

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def failed(self) -> tuple:
        """The rows whose run raised."""
        return tuple(r for r in self.rows if r.get("error"))

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

    def to_pandas(self):
        """The table as a :class:`pandas.DataFrame` (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(list(self.rows), columns=list(self.columns))

    def depth_slope(self, *, by: Sequence[str] | None = None, confidence: float = 0.95) -> list:
        """Fit RA4's ``log sigma1_mean = a + b log L`` in each group of runs.

        Parameters
        ----------
        by : sequence of str, optional
            Columns that define a group. Default: every config column except
            ``depth`` and ``seed`` (seeds are replicates of one model family).
        confidence : float, default 0.95

        Returns
        -------
        list of (dict, DepthSlopeFit)
            The group's key values and its fit. Groups with fewer than three successful
            runs at two or more depths are skipped.
        """
        from .metrics import fit_depth_slope

        if by is None:
            by = [c for c in self.config_columns if c not in ("depth", "seed")]
        groups: dict[tuple, list[dict]] = {}
        for r in self.rows:
            if r.get("error") or r.get("sigma1_mean") is None:
                continue
            groups.setdefault(tuple(_hashable(r.get(c)) for c in by), []).append(r)
        fits = []
        for key, rows in groups.items():
            depths = [r["depth"] for r in rows]
            if len(rows) < 3 or len(set(depths)) < 2:
                continue
            fit = fit_depth_slope(depths, [r["sigma1_mean"] for r in rows], confidence=confidence)
            fits.append((dict(zip(by, key)), fit))
        return fits

    @property
    def config_columns(self) -> tuple:
        """The columns that describe a run's configuration."""
        skip = set(RUN_COLUMNS) | set(THEOREM_COLUMNS) | set(VERDICT_COLUMNS)
        metric_start = self.columns.index("T1") if "T1" in self.columns else len(self.columns)
        return tuple(c for c in self.columns[:metric_start] if c not in skip)

    def __str__(self) -> str:
        show = [c for c in (*self.config_columns, "converged", "grad_norm", "sigma1_mean", "RA2", "RA3", "error") if c in self.columns]
        lines = ["  ".join(f"{c:>12}" for c in show)]
        for r in self.rows:
            cells = []
            for c in show:
                v = r.get(c)
                cells.append(f"{v:>12.4g}" if isinstance(v, float) else f"{str(v if v is not None else ''):>12}"[:40])
            lines.append("  ".join(cells))
        return "\n".join(lines)


def _hashable(v):
    return tuple(v) if isinstance(v, list) else (tuple(sorted(v.items())) if isinstance(v, dict) else v)




def _as_list(name: str, values: Any) -> list:
    if values is None:
        return [None]
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        return [values]
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def _progress(total: int, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="sweep", unit="run")


def sweep(
    *,
    depths: Iterable[int],
    classes: Iterable[int] | int,
    widths: Iterable[int | None] | int | None = None,
    skips: Iterable[Any] | str = "identity",
    seeds: Iterable[int] | int = 0,
    executor: cf.Executor | str | None = None,
    progress: bool | None = None,
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
        ``if __name__ == "__main__":`` guard on platforms that spawn). ``"serial"``: in
        this process. Any other executor, e.g. ``dask.distributed.Client(...).get_executor()``,
        is used as given and not shut down.
    progress : bool, optional
        A tqdm progress bar. Default: only when stderr is a terminal.
    **simulate_kwargs
        Passed to every run (e.g. ``branch_factors=2``, ``loss="cross_entropy"``).

    Returns
    -------
    SweepResult

    Examples
    --------
    >>> res = sweep(depths=[2, 4], classes=2, widths=4, executor="serial")
    >>> len(res), res.column("converged")
    (2, [True, True])
    """
    grid = list(
        itertools.product(
            _as_list("depths", depths), _as_list("classes", classes), _as_list("widths", widths),
            _as_list("skips", skips), _as_list("seeds", seeds),
        )
    )
    configs = []
    for depth, n_classes, width, skip, seed in grid:
        cfg = dict(depth=depth, classes=n_classes, skip=skip, seed=seed, **simulate_kwargs)
        if width is not None:
            cfg["width"] = width
        configs.append(cfg)

    own = executor is None
    if executor == "serial":
        executor = SerialExecutor()
    elif executor is None:
        executor = cf.ProcessPoolExecutor(max_workers=min(len(configs), os.cpu_count() or 1))
    elif not isinstance(executor, cf.Executor) and not hasattr(executor, "submit"):
        raise TypeError(f"executor must be a concurrent.futures.Executor, 'serial' or None, got {executor!r}")
    bar = _progress(len(configs), progress)
    rows: list[dict | None] = [None] * len(configs)
    try:
        futures = {executor.submit(run_one, cfg): i for i, cfg in enumerate(configs)}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                rows[i] = fut.result()
            except Exception as exc:  # the worker itself died (e.g. killed process)
                rows[i] = {**{k: configs[i].get(k) for k in CONFIG_COLUMNS}, "converged": False,
                           "error": f"{type(exc).__name__}: {exc}"}
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if own:
            executor.shutdown()
    columns: list[str] = []
    for r in rows:
        for c in r:
            if c not in columns:
                columns.append(c)
    # Config first, then run information, theorem and RA verdicts, then metrics.
    head = [c for c in columns if c in CONFIG_COLUMNS]
    extra_config = [c for c in columns if c in simulate_kwargs]
    tail_fixed = [c for c in (*RUN_COLUMNS, *THEOREM_COLUMNS, *VERDICT_COLUMNS) if c in columns]
    metrics = [c for c in columns if c not in head + extra_config + tail_fixed]
    ordered = tuple(head + extra_config + tail_fixed + metrics)
    return SweepResult(rows=tuple(rows), columns=ordered)
