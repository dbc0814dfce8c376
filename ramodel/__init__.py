"""ramodel: Residual Alignment in residual networks.

The Unconstrained Jacobians Model (``simulate``), RA metrics, entangled skip
mappings, and the theorems connecting them. See README.md.
"""

__version__ = "0.1.0"
