"""ramodel: Residual Alignment in residual networks.

The Unconstrained Jacobians Model (:func:`simulate`), RA metrics, entangled skip
mappings, and the theorems connecting them. See README.md.
"""

from .optimize import DivergenceError
from .simulate import Simulation, simulate

__all__ = ["simulate", "Simulation", "DivergenceError", "__version__"]

__version__ = "0.1.0"
