"""``ramodel train``: train a net of the architecture registry on a registered data set, export its Jacobians.

Only parsing and printing: the work is done by the library functions named in the help.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings

from ..data_registry import DATASETS
from ._common import (
    EXIT_OK,
    CLIError,
    _atomic_write,
    _json_text,
    _key_value,
    _print,
)

NAME = 'train'
HELP = 'train a network from ramodel.nets and export its Jacobians'
DESCRIPTION = (
    "Train a network of ramodel.nets.ARCHITECTURES on a data set of ramodel.data_registry.DATASETS, then "
    "export the residual Jacobians of test inputs (ramodel.training.train_and_export)."
)
EXAMPLES = """\
examples:
  ramodel train --out out/mlp                         # ResidualMLP on digits, 10 epochs
  ramodel train --dataset digits --classes 3 --depth 8 --width 32 --skip orthogonal --out out/orth
  ramodel train --arch conv --channels 8 --depth 2 --inputs 50 --method matrix_free --k 4 --out out/conv
  ramodel train --arch vit --width 16 --depth 1 --heads 2 --inputs 20 --out out/vit
  ramodel train --arch rnn --dataset majority_symbols --data-param steps=8 --width 16 --out out/rnn
  ramodel train --out out/mlp --epochs 20 --resume     # continue from out/mlp/checkpoint.pt
  ramodel train --protocol terminal --dataset mnist5k --depth 8 --pick random --out out/ra
                                                      # long enough for weight decay to remove the init

--protocol terminal fills every training option not given with defaults measured to reach the
regime where weight decay has removed the initialisation (ramodel.training.PROTOCOLS: 3000
steps, batch 256, lr 0.1, warmup 5% of the steps, weight decay 1e-2, gradient clip 5); the short default
protocol leaves the branch weights at cosine 0.8-0.9 with their initial values, and RA measured
then measures the initialisation (train.json: init_cosine; a warning above 0.5).

files written to --out DIR: jacobians.npz (FORMAT.md: Jacobians, representations, skips,
classifier and meta of --inputs test inputs), train.json (what --json prints) and
checkpoint.pt. --arch rnn exports the step Jacobians of its one cell (L = the sequence
length, dense; ramodel.nets.ResidualRNN.jacobian_set). Then: ramodel analyze DIR/jacobians.npz.
Needs torch: pip install 'ramodel[torch]'."""


def configure(p: argparse.ArgumentParser) -> None:
    """Add the options of ``ramodel train`` to ``p``."""
    p.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR",
                   help="writes jacobians.npz, train.json and checkpoint.pt here")
    g = p.add_argument_group("data (ramodel.data_registry.DATASETS)")
    g.add_argument("--dataset", choices=tuple(DATASETS), default="digits",
                   help="; ".join(f"{n}: {e.doc}" for n, e in DATASETS.items()) + " (default digits)")
    g.add_argument("--classes", type=int, help="C: keep classes 0..C-1, or C symbols for majority_symbols "
                                               "(default: the data set's, all 10 digits)")
    g.add_argument("--data-param", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="an option of the data set's loader, e.g. steps=32 or train_size=2000; repeatable")
    g = p.add_argument_group("network (ramodel.nets.ARCHITECTURES; an option applies to the architectures named)")
    g.add_argument("--arch", choices=_ArchitectureNames(), default="mlp",
                   help="a network of ramodel.nets.ARCHITECTURES; rnn needs a sequence data set "
                        "(e.g. --dataset majority_symbols) (default mlp)")
    g.add_argument("--width", type=int, help="residual width d: mlp (default 32), vit embedding (32), rnn state (32)")
    g.add_argument("--channels", type=int, help="conv channels (default 8)")
    g.add_argument("--depth", type=int, help="mlp, conv: residual blocks L (default 4); vit: layers, two blocks "
                                             "each (default 2); rnn: L is the sequence length (--data-param steps=N)")
    g.add_argument("--activation", help="mlp (default relu), rnn (default tanh)")
    g.add_argument("--norm", help="mlp branch normalisation: none, layernorm, batchnorm (default none)")
    g.add_argument("--patch", type=int, help="vit patch side (default 2)")
    g.add_argument("--heads", type=int, help="vit attention heads (default 4)")
    g.add_argument("--skip", default="identity", help="skip family (default identity)")
    g.add_argument("--skip-param", action="append", type=_key_value, metavar="KEY=VALUE")
    g.add_argument("--skip-shared", action="store_true")
    g = p.add_argument_group("training")
    g.add_argument("--protocol", choices=("default", "terminal"), default="default",
                   help="defaults of the options below (ramodel.training.PROTOCOLS); 'terminal' trains until "
                        "weight decay has removed the initialisation (default: default)")
    g.add_argument("--epochs", type=int, help="length in epochs (default 10 with --protocol default)")
    g.add_argument("--steps", type=int, help="length in optimizer steps (default 3000 with --protocol terminal)")
    g.add_argument("--batch-size", type=int, help="(default 128; terminal 256)")
    g.add_argument("--lr", type=float, help="peak learning rate (default 0.05; terminal 0.1)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 5e-4; terminal 1e-2)")
    g.add_argument("--schedule", help="cosine, step or constant (default cosine)")
    g.add_argument("--warmup", type=int, help="linear warmup steps (default 0; terminal 5%% of the steps)")
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm (default none; terminal 5)")
    g.add_argument("--decoupled-decay", action=argparse.BooleanOptionalAction, default=None,
                   help="decoupled weight decay w <- (1 - lr wd) w instead of L2 in the gradient (default off)")
    g.add_argument("--decay-on", choices=("all", "weights"), help="decay all parameters or weights only (default all)")
    g.add_argument("--eval-every", type=int, help="test accuracy every N epochs (default: at the end only)")
    g.add_argument("--loss", default="cross_entropy", help="cross_entropy or mse (default cross_entropy)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the weights, shuffling and skips (default 0)")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    g.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt when present")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g = p.add_argument_group("export")
    g.add_argument("--inputs", type=int, default=100, help="test inputs to export (default 100; capped at the split)")
    g.add_argument("--split", choices=("test", "train"), default="test", help="(default test)")
    g.add_argument("--pick", choices=("first", "random"), default="first",
                   help="the first --inputs of the split, or a seeded random subset (default first; mnist5k's "
                        "test split is sorted by class, so its first inputs hold only classes 0 and 1)")
    g.add_argument("--method", default="auto", help="auto, dense or matrix_free (default auto)")
    g.add_argument("--k", type=int, help="singular triplets for matrix_free (default C)")
    g.add_argument("--export-dtype", default="float64", help="float64 or float32 (default float64)")
class _ArchitectureNames:
    """``--arch``'s choices: the names of :data:`ramodel.nets.ARCHITECTURES`, read when first needed.

    ``ramodel.nets`` imports torch, so the names are looked up only when argparse checks a
    given ``--arch`` or prints ``ramodel train --help``; ``ramodel --help`` stays quick.
    Without torch every name is let through, so ``run`` says how to install it.
    """

    def _names(self):
        try:
            from ..nets import ARCHITECTURES
        except ImportError:
            return None
        return tuple(ARCHITECTURES)

    def __contains__(self, name) -> bool:
        names = self._names()
        return names is None or name in names

    def __iter__(self):
        return iter(self._names() or ("mlp", "conv", "vit", "rnn"))


_NET_OPTIONS = ("depth", "width", "channels", "activation", "norm", "patch", "heads")


def _torch_modules():
    try:
        import torch  # noqa: F401

        from .. import nets, training
    except ImportError as exc:
        raise CLIError(f"'ramodel train' needs PyTorch, which could not be imported ({exc}): "
                       "pip install 'ramodel[torch]'") from None
    return nets, training


def run(args: argparse.Namespace) -> int:
    from .. import data_registry

    for name in ("epochs", "steps", "batch_size", "eval_every", "k", "inputs", *_NET_OPTIONS[:3], "patch", "heads"):
        v = getattr(args, name)
        if v is not None and not isinstance(v, str) and v < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.warmup is not None and args.warmup < 0:
        raise CLIError(f"--warmup must be >= 0, got {args.warmup}")
    if args.epochs is not None and args.steps is not None:
        raise CLIError(f"give --epochs or --steps, not both (got --epochs {args.epochs} and --steps {args.steps})")
    nets, training = _torch_modules()
    if args.schedule is not None and args.schedule not in training.SCHEDULES:
        raise CLIError(f"--schedule must be one of {', '.join(training.SCHEDULES)}, got {args.schedule!r}")
    arch = nets.architecture(args.arch)
    given = {n: getattr(args, n) for n in _NET_OPTIONS if getattr(args, n) is not None}
    for name in given:
        if name not in arch.options:
            hint = "; its depth L is the sequence length (--data-param steps=N)" if (
                name == "depth" and arch.layout == "sequence") else ""
            raise CLIError(f"--{name} does not apply to --arch {arch.name} ({arch.cls.__name__}); its options are "
                           + ", ".join(f"--{o}" for o in arch.options) + hint)
    try:
        ds = data_registry.load(args.dataset, classes=args.classes, seed=args.seed, **dict(args.data_param or []))
    except TypeError as exc:
        raise CLIError(f"--dataset {args.dataset}: {exc}") from None
    try:
        arch.check_dataset(ds, name=f"--dataset {args.dataset}")
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    model = arch.build(ds, **given, skip=args.skip, skip_params=dict(args.skip_param or []) or None,
                       skip_shared=args.skip_shared, seed=args.seed, init_seed=args.seed)
    try:
        # Export options are checked before training, so a typo does not cost a training run.
        training.check_export(model, k=args.k, method=args.method, dtype=args.export_dtype)
    except ValueError as exc:
        raise CLIError(str(exc).replace("method must", "--method must").replace("export dtype must",
                       "--export-dtype must").replace("k must", "--k must")) from None
    options = {"batch_size": args.batch_size, "lr": args.lr, "momentum": args.momentum,
               "weight_decay": args.weight_decay, "schedule": args.schedule, "warmup": args.warmup,
               "grad_clip": args.grad_clip, "decoupled_decay": args.decoupled_decay, "decay_on": args.decay_on}
    options = {k: v for k, v in options.items() if v is not None}
    if args.protocol == "default":
        options.setdefault("lr", 0.05)  # the command's default since its first release
        if args.steps is None and args.epochs is None:
            args.epochs = 10
    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"--out {str(args.out)!r} exists and is not a folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", training.InitialisationWarning)
        done = training.train_and_export(
            model, ds, args.out, inputs=args.inputs, split=args.split, pick=args.pick, k=args.k,
            method=args.method, export_dtype=args.export_dtype, dataset_name=args.dataset, seed=args.seed,
            resume=args.resume, protocol=args.protocol, epochs=args.epochs, steps=args.steps, **options,
            progress=args.progress, device=args.device, loss=args.loss, eval_every=args.eval_every,
        )
    for w in caught:
        if issubclass(w.category, training.InitialisationWarning):
            print(f"ramodel train: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    out, js, result = args.out, done.jacobian_set, done.result
    payload = {"command": "train", **done.to_dict()}
    payload["files"] = {"jacobians.npz": str(out / "jacobians.npz"), "train.json": str(out / "train.json"),
                        "checkpoint.pt": str(out / "checkpoint.pt")}
    _atomic_write(out / "train.json", _json_text(payload))
    if args.json:
        _print(_json_text(payload))
    else:
        form = "dense" if js.has_dense else f"top-{js.k} factors"
        _print(
            f"trained {model.config['architecture']} (L={js.depth}, skip {args.skip}) on {args.dataset} "
            f"(C={ds.classes}) for {result.steps} steps, {result.epochs} epochs ({result.steps_run} steps run now, "
            f"{result.seconds:.1f} s, protocol {args.protocol}): train accuracy {result.final_train_accuracy:.4f}, "
            f"test accuracy {result.final_test_accuracy:.4f}, init_cosine {result.init_cosine:.3f}\n"
            f"exported the Jacobians of {len(done.indices)} {args.split} inputs ({form}, L={js.depth}, d={js.width}) "
            f"to {out / 'jacobians.npz'}\n"
            f"next: ramodel analyze {out / 'jacobians.npz'}   or   ramodel theory {out / 'jacobians.npz'}"
        )
    return EXIT_OK
