# %% [markdown]
# # Worked example: Residual Alignment with `ramodel`
#
# This notebook runs offline, top to bottom, in well under a minute on a laptop CPU. It
# solves the Unconstrained Jacobians Model (UJM), measures Residual Alignment (RA1-RA4)
# on the solution, checks the theorems, fits RA4's depth slope, compares an entangled
# skip, and analyses a Jacobian file the way you would analyse a trained network. It
# ends with a self-contained one-page HTML report.
#
# `simulations/worked_example.py` is the same code as a plain script (the test suite
# runs it and checks that its code equals this notebook's code cells).

# %%
import io
import pathlib

import numpy as np

import ramodel
from ramodel import html_report, plots, theory
from ramodel.jacobian_set import JacobianSet

OUT = pathlib.Path("worked_example_out")
OUT.mkdir(exist_ok=True)


def show(obj, name=None):
    """Rich output in Jupyter (tables, figures), text in a script; figures are also saved to OUT."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
        shell = get_ipython()
    except ImportError:
        shell = None
    if hasattr(obj, "savefig"):
        buf = io.BytesIO()
        obj.savefig(buf, format="png", dpi=100)
        if name is not None:
            (OUT / name).write_bytes(buf.getvalue())
        if shell is not None:
            display(Image(buf.getvalue()))
        else:
            print(f"[figure saved to {OUT / name}]" if name else "[figure]")
    elif shell is not None:
        display(obj)
    else:
        print(obj)


# %% [markdown]
# ## 1. Solve one model
#
# `simulate` minimises the UJM's objective to a gradient norm of 1e-10 (L-BFGS, then a
# Newton polish). Depth 8, 3 classes, a Gaussian mixture and identity skips:

# %%
sim = ramodel.simulate(depth=8, classes=3, seed=0)
print(sim.converged, f"|grad Phi| = {sim.grad_norm:.1e}", sim.jacobians.shape)
show(sim)

# %% [markdown]
# ## 2. Measure RA
#
# The report has one row per metric of `METRICS.md`, with its chance level and the
# threshold of its verdict. RA1 usually fails on the plain UJM: the trajectories are
# straight, but the steps grow by `1 + sigma` per block (see the README).

# %%
report = sim.report()
show(report)
print(dict(report.verdicts))

# %%
show(plots.alignment_heatmap(report.metrics["K"].detail), "alignment.png")
show(plots.trajectories(sim.representations, labels=sim.labels), "trajectories.png")

# %% [markdown]
# ## 3. The theorems at the solution
#
# With identity skips every `J_l` equals the closed form
# `J* = (-I + (I + 4 (lambda_W / lambda_J) W^T W)^{1/2}) / 2` (T3), and its rank is at
# most C (T1). Both hold to rounding error:

# %%
J_star = theory.closed_form_jacobian(sim.classifier, sim.weight_decay)
print("max |J_l - J*| =", f"{np.abs(sim.jacobians - J_star).max():.1e}")
print("singular values of J*:", np.round(np.linalg.svd(J_star, compute_uv=False)[:4], 6))

# %% [markdown]
# ## 4. RA4: the top singular value against depth
#
# A small sweep with two-factor branches (`branch_factors=2`), in this process. The fitted
# log-log slope is close to -1 (the README's table has the full sweep).

# %%
res = ramodel.sweep(depths=[2, 4, 8, 16], classes=3, widths=8, seeds=0, branch_factors=2, executor="serial")
(group, fit), = res.depth_slope()
print(f"slope {fit.slope:.3f}, 95% CI [{fit.ci_low:.3f}, {fit.ci_high:.3f}]")
show(plots.depth_scaling(res.column("depth"), res.column("sigma1_mean"), slope=fit.slope,
                         intercept=fit.intercept, ci=(fit.ci_low, fit.ci_high)), "depth_scaling.png")

# %% [markdown]
# ## 5. An entangled skip
#
# With orthogonal skips `M_l`, T3 is lost (`J_l` is no longer symmetric) but T6 survives:
# `J_L M_L^T` is symmetric. `check_theory` reads each theorem as a number next to its
# chance level (the Jacobians' singular vectors randomly rotated):

# %%
entangled = ramodel.simulate(depth=8, classes=3, skip="orthogonal", seed=0)
th = ramodel.check_theory(entangled)
for name in ("chain_residual", "asymmetry", "skip_asymmetry", "numerical_rank"):
    m = th.measures[name]
    print(f"{m.theorem} {name:<15} value {m.value:.2e}   chance {m.chance:.2e}")

# %% [markdown]
# ## 6. A Jacobian file, as from a trained network
#
# `ramodel train` and `ramodel.torch.export_jacobians` write the per-input Jacobians of a
# trained network to a file (`spec/FORMAT.md`). Here we write one from the entangled
# simulation instead (its Jacobians repeated for every input), load it back, and analyse
# it like a network: RA report, theorem measures, and the UJM fitted to its own features.

# %%
N = entangled.labels.shape[0]
J = np.broadcast_to(entangled.jacobians[:, None], (8, N, 16, 16))
jset = JacobianSet(labels=entangled.labels, classes=3, meta={"loss": "mse", "source": "worked example"},
                   jacobians=np.ascontiguousarray(J), representations=entangled.representations,
                   skips=entangled.skips, classifier=entangled.classifier)
jset.save(OUT / "entangled.npz")
loaded = JacobianSet.load(OUT / "entangled.npz")
show(loaded)

# %%
net_report = ramodel.analyze(loaded)
fitted = ramodel.fit_ujm(loaded)
net_theory = ramodel.check_theory(loaded, fitted=fitted)
print(dict(net_report.verdicts))
print("alignment with the fitted UJM, per layer:",
      np.round(net_theory.fit["subspace_alignment_left"].per_layer, 4))

# %% [markdown]
# ## 7. A one-page report
#
# The same page `ramodel analyze FILE --html report.html` writes: metric tables side by
# side and the figures embedded, in one file that opens offline.

# %%
page = html_report.analysis_page([("identity skips", sim, report), ("orthogonal skips", loaded, net_report)],
                                 title="Worked example: identity vs orthogonal skips")
print("wrote", html_report.write_html(page, OUT / "report.html"))

# %% [markdown]
# From a shell, the same steps are:
#
# ```bash
# ramodel simulate --depth 8 --classes 3 --out out/sim --save-jacobians
# ramodel analyze out/sim/jacobians.npz worked_example_out/entangled.npz --html report.html
# ramodel theory worked_example_out/entangled.npz --html theory.html
# ramodel train --out out/mlp && ramodel analyze out/mlp/jacobians.npz   # needs ramodel[torch]
# ```
