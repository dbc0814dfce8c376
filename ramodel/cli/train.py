"""``ramodel train``: train a net of the architecture registry on a registered data set, export its Jacobians.

Only parsing and printing: the work is done by the library functions named in the help.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings

from ._common import (
    EXIT_OK,
    CLIError,
    _atomic_write,
    _json_text,
    _key_value,
    _out_dir,
    _print,
)

NAME = 'train'
HELP = 'train a network from ramodel.nets and export its Jacobians'
DESCRIPTION = (
    'Train a ResNet from ramodel.nets on a data set bundled offline (ramodel.training.train), then export the residual Jacobians of test inputs (ramodel.torch.export_jacobians).'
)
EXAMPLES = """\
examples:
  ramodel train --out out/mlp                         # ResidualMLP on digits, 10 epochs
  ramodel train --dataset digits --classes 3 --depth 8 --width 32 --skip orthogonal --out out/orth
  ramodel train --arch conv --channels 8 --depth 2 --inputs 50 --method matrix_free --k 4 --out out/conv
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
checkpoint.pt. Then: ramodel analyze DIR/jacobians.npz. Needs torch: pip install 'ramodel[torch]'."""


def configure(p: argparse.ArgumentParser) -> None:
    """Add the options of ``ramodel train`` to ``p``."""
    p.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR",
                   help="writes jacobians.npz, train.json and checkpoint.pt here")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=("digits", "mnist5k"), default="digits", help="(default digits)")
    g.add_argument("--classes", type=int, help="keep classes 0..C-1 (default all 10)")
    g = p.add_argument_group("network")
    g.add_argument("--arch", choices=("mlp", "conv"), default="mlp",
                   help="ResidualMLP or a one-stage ConvResNet (default mlp)")
    g.add_argument("--width", type=int, default=32, help="MLP residual width d (default 32)")
    g.add_argument("--channels", type=int, default=8, help="conv channels (default 8)")
    g.add_argument("--depth", type=int, default=4, help="residual blocks L (default 4)")
    g.add_argument("--activation", default="relu", help="MLP branch activation (default relu)")
    g.add_argument("--norm", default="none", help="MLP branch normalisation: none, layernorm, batchnorm (default none)")
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
def _torch_modules():
    try:
        import torch  # noqa: F401

        from .. import nets, training
        from .. import torch as ra_torch
    except ImportError as exc:
        raise CLIError(f"'ramodel train' needs PyTorch, which could not be imported ({exc}): "
                       "pip install 'ramodel[torch]'") from None
    return nets, training, ra_torch


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import datasets

    for name in ("depth", "inputs", "width", "channels"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("epochs", "steps", "batch_size", "eval_every", "k"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup is not None and args.warmup < 0:
        raise CLIError(f"--warmup must be >= 0, got {args.warmup}")
    if args.epochs is not None and args.steps is not None:
        raise CLIError(f"give --epochs or --steps, not both (got --epochs {args.epochs} and --steps {args.steps})")
    nets, training, ra_torch = _torch_modules()
    # Export options are checked before training, so a typo does not cost a training run.
    if args.method not in ra_torch.METHODS:
        raise CLIError(f"--method must be one of {', '.join(ra_torch.METHODS)}, got {args.method!r}")
    if args.export_dtype not in ("float32", "float64"):
        raise CLIError(f"--export-dtype must be float32 or float64, got {args.export_dtype!r}")
    if args.schedule is not None and args.schedule not in training.SCHEDULES:
        raise CLIError(f"--schedule must be one of {', '.join(training.SCHEDULES)}, got {args.schedule!r}")
    width = args.width if args.arch == "mlp" else args.channels
    if args.k is not None and args.arch == "mlp" and args.k > width:
        raise CLIError(f"--k must be <= the residual width {width}, got {args.k}")
    options = {"batch_size": args.batch_size, "lr": args.lr, "momentum": args.momentum,
               "weight_decay": args.weight_decay, "schedule": args.schedule, "warmup": args.warmup,
               "grad_clip": args.grad_clip, "decoupled_decay": args.decoupled_decay, "decay_on": args.decay_on}
    options = {k: v for k, v in options.items() if v is not None}
    if args.protocol == "default":
        options.setdefault("lr", 0.05)  # the command's default since its first release
        if args.steps is None and args.epochs is None:
            args.epochs = 10
    created = not args.out.exists()
    out = _out_dir(args.out)
    try:
        return _train_and_export(args, out, options, nets, training, ra_torch, datasets, np)
    finally:
        # A failed run leaves no empty --out folder behind (a checkpoint, if any, is kept for --resume).
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _train_and_export(args, out, options, nets, training, ra_torch, datasets, np) -> int:
    loader = {"digits": datasets.digits, "mnist5k": datasets.mnist5k}[args.dataset]
    ds = loader(classes=args.classes, seed=args.seed)
    skip_params = dict(args.skip_param or [])
    common = {"skip": args.skip, "skip_params": skip_params or None, "skip_shared": args.skip_shared,
              "seed": args.seed, "init_seed": args.seed}
    if args.arch == "mlp":
        model = nets.ResidualMLP(ds.n_features, ds.classes, width=args.width, depth=args.depth,
                                 activation=args.activation, norm=args.norm, **common)
    else:
        if ds.image_shape is None:
            raise CLIError(f"--arch conv needs an image data set; {args.dataset} has no image shape")
        model = nets.ConvResNet(1, ds.classes, channels=(args.channels,), blocks_per_stage=args.depth, **common)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", training.InitialisationWarning)
        result = training.train(
            model, ds, epochs=args.epochs, steps=args.steps, protocol=args.protocol, **options, seed=args.seed,
            checkpoint=out / "checkpoint.pt", resume=args.resume, progress=args.progress, device=args.device,
            loss=args.loss, eval_every=args.eval_every,
        )
    for w in caught:
        if issubclass(w.category, training.InitialisationWarning):
            print(f"ramodel train: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    x = ds.x_test if args.split == "test" else ds.x_train
    y = ds.y_test if args.split == "test" else ds.y_train
    n = min(args.inputs, len(y))
    if args.pick == "random":
        idx = np.sort(np.random.default_rng(args.seed).permutation(len(y))[:n])
    else:
        idx = np.arange(n)
    x, y = np.array(x)[idx], np.array(y)[idx]  # writable copies: torch refuses read-only arrays
    missing = sorted(set(range(ds.classes)) - {int(c) for c in y})
    if missing:
        print(f"ramodel train: warning: the {n} exported {args.split} inputs hold no example of class(es) "
              f"{missing}; RA and NC measures then miss those classes (try --pick random)", file=sys.stderr)
    if getattr(model, "expects_images", False):
        x = x.reshape(n, 1, *ds.image_shape)
    settings = dict(result.settings)
    meta = {
        "dataset": args.dataset,
        "split": args.split,
        "class_ids": list(ds.class_ids),
        "train_accuracy": result.final_train_accuracy,
        "test_accuracy": result.final_test_accuracy,
        "seed": args.seed,
        "loss": args.loss,
        "model": model.config,
        "training": {"epochs": result.epochs, "steps": result.steps, "protocol": args.protocol,
                     "batch_size": settings["batch_size"], "lr": settings["lr"],
                     "weight_decay": settings["weight_decay"], "schedule": settings["schedule"],
                     "warmup": settings["warmup"], "grad_clip": settings["grad_clip"],
                     "decoupled_decay": settings["decoupled_decay"], "decay_on": settings["decay_on"],
                     "init_cosine": result.init_cosine},
    }
    js = ra_torch.export_jacobians(model, x, y, out / "jacobians.npz", k=args.k, classes=ds.classes, meta=meta,
                                   dtype=args.export_dtype, method=args.method, seed=args.seed)
    payload = {"command": "train", "model": model.config, "dataset": ds.to_dict(),
               "training": result.to_dict(lr_steps=False), "init_cosine": result.init_cosine,
               "init_cosine_blocks": list(result.init_cosine_blocks),
               "export": js.to_dict(),
               "files": {"jacobians.npz": str(out / "jacobians.npz"), "train.json": str(out / "train.json"),
                         "checkpoint.pt": str(out / "checkpoint.pt")}}
    _atomic_write(out / "train.json", _json_text(payload))
    if args.json:
        _print(_json_text(payload))
    else:
        form = "dense" if js.has_dense else f"top-{js.k} factors"
        _print(
            f"trained {model.config['architecture']} (L={args.depth}, skip {args.skip}) on {args.dataset} "
            f"(C={ds.classes}) for {result.steps} steps, {result.epochs} epochs ({result.steps_run} steps run now, "
            f"{result.seconds:.1f} s, protocol {args.protocol}): train accuracy {result.final_train_accuracy:.4f}, "
            f"test accuracy {result.final_test_accuracy:.4f}, init_cosine {result.init_cosine:.3f}\n"
            f"exported the Jacobians of {n} {args.split} inputs ({form}, L={js.depth}, d={js.width}) to "
            f"{out / 'jacobians.npz'}\n"
            f"next: ramodel analyze {out / 'jacobians.npz'}   or   ramodel theory {out / 'jacobians.npz'}"
        )
    return EXIT_OK
