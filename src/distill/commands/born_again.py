"""`distill born-again RECIPE --teacher DIR --generations N`: self-distillation over generations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distill.commands import add_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("born-again", help="born-again networks: the teacher's architecture, distilled N generations")
    p.add_argument("recipe", type=Path)
    p.add_argument("--teacher", type=Path, required=True, help="a saved teacher (model directory)")
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--method", default=None, help="method of the recipe's methods to use (default: the first)")
    add_overrides(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import torch

    from distill import api
    from distill.born_again import born_again
    from distill.distillers.base import build_distiller
    from distill.errors import ConfigError
    from distill.models.zoo import create_model
    from distill.workflow import rundir

    # Every argument is checked before anything is created: a refused run leaves no directory behind.
    if args.generations < 1:
        raise ConfigError(f"--generations must be >= 1, got {args.generations}")
    cfg = api.as_config(args.recipe, args.overrides)
    inputs = [*api.run_inputs(cfg, args.recipe), ("the teacher", args.teacher)]
    rundir.check(args.out, kind="born-again", overwrite=args.overwrite, inputs=inputs)  # before minutes of loading
    api.seed_everything(cfg.seed, cfg.deterministic)
    data, dm = api.load_data(cfg)
    teacher, spec = api.load_teacher(args.teacher, data, cfg.teacher.public_key)
    methods = [m for m in cfg.methods if m.name != "scratch"]
    chosen = (
        next((m for m in methods if (m.label or m.name) == args.method), None)
        if args.method
        else (methods[0] if methods else None)
    )
    if chosen is None:
        raise ConfigError(
            f"no distillation method {args.method or ''!r} in the recipe; it lists "
            f"{[m.label or m.name for m in cfg.methods]}"
        )

    def make_student():
        return create_model(
            spec["model"], num_classes=spec["num_classes"], in_channels=spec["in_channels"], **spec.get("kwargs", {})
        )

    with torch.random.fork_rng(devices=[]):  # the method and its parameters on the real shapes; RNG untouched
        build_distiller(
            chosen.name, make_student(), teacher, dm.input_shape, len(dm.x_train), dm.num_classes, **chosen.params
        ).close()
    api.prepare_out_dir(args.out, args.overwrite, False, cfg, kind="born-again", inputs=inputs)
    device = api.resolve_device(cfg.device)
    results = born_again(
        make_student,
        teacher.to(device),
        dm,
        cfg.train,
        args.generations,
        chosen.name,
        chosen.params,
        device,
        args.out,
        spec=spec,
    )
    rows = [
        {"generation": k, "accuracy": m["test"]["acc"], "ensemble_accuracy": m.get("ensemble", {}).get("acc")}
        for k, (_, m) in enumerate(results, 1)
    ]
    (args.out / "born_again.json").write_text(json.dumps(rows, indent=2) + "\n")
    for r in rows:
        ens = f"  ensemble of 1..{r['generation']}: {r['ensemble_accuracy']:.4f}" if r["ensemble_accuracy"] else ""
        print(f"generation {r['generation']}: test acc {r['accuracy']:.4f}{ens}")
    return 0
