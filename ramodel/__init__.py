"""ramodel: Residual Alignment in residual networks.

The Unconstrained Jacobians Model (:func:`simulate`), RA and neural-collapse metrics
(:func:`analyze`), depth/class/skip sweeps (:func:`sweep`), entangled skip mappings
(:mod:`ramodel.mappings`), Jacobian files from trained networks (:class:`JacobianSet`),
and the theorems connecting them (:mod:`ramodel.theory`). See README.md.

PyTorch pieces (:mod:`ramodel.nets`, :mod:`ramodel.training`, :mod:`ramodel.torch`) are
imported only on request, so the package works without torch.
"""

from .fit import fit_ujm
from .jacobian_set import JacobianSet
from .optimize import DivergenceError
from .report import RAReport, Thresholds, analyze
from .scaling import DepthScaling, depth_scaling
from .simulation import Simulation, simulate
from .sweeps import SweepResult, sweep
from .theory import TheoryReport
from .theory import check as check_theory

__all__ = [
    "simulate",
    "Simulation",
    "analyze",
    "RAReport",
    "Thresholds",
    "sweep",
    "SweepResult",
    "depth_scaling",
    "DepthScaling",
    "JacobianSet",
    "fit_ujm",
    "check_theory",
    "TheoryReport",
    "DivergenceError",
    "__version__",
]

__version__ = "0.1.0"
