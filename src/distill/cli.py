"""The ``distill`` command: thin subcommands over :mod:`distill.api`; choices come from the registries."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from distill.errors import DistillError, Interrupted


def _recipe_args(p: argparse.ArgumentParser, out: bool = True) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set train.epochs=3 (repeatable)",
    )
    if out:
        p.add_argument("--out", type=Path, help="run directory (default: runs/<recipe>-<time>)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
        p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="distill", description="Knowledge distillation and model compression.")
    ap.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="the whole pipeline of a recipe: teacher, students, report")
    p.add_argument("recipe", type=Path)
    _recipe_args(p)
    p = sub.add_parser("train", help="train (or load) the recipe's teacher only")
    p.add_argument("recipe", type=Path)
    _recipe_args(p)
    p = sub.add_parser("distill", help="distil the recipe's students from a saved teacher")
    p.add_argument("recipe", type=Path)
    p.add_argument("--teacher", type=Path, required=True, help="a model directory (model.json + model.safetensors)")
    _recipe_args(p)
    p = sub.add_parser("evaluate", help="accuracy of a saved model on a dataset split")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--recipe", type=Path, help="recipe whose data section to use (default: Fashion-MNIST)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    _recipe_args(p, out=False)
    p = sub.add_parser("list", help="what is registered")
    p.add_argument("what", choices=["models", "methods", "datasets"])
    p = sub.add_parser("info", help="print a run's summary table")
    p.add_argument("run_dir", type=Path)
    from distill.commands import plugins

    for plugin in plugins():
        plugin.register(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return dispatch(args)
    except DistillError as e:
        if args.debug:
            raise
        print(f"distill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if args.debug:
            raise
        msg = (
            str(e)
            if isinstance(e, Interrupted)
            else "interrupted; rerun with --resume to continue from the last checkpoint"
        )
        print(f"distill: {msg}", file=sys.stderr)
        return 130


def dispatch(args: argparse.Namespace) -> int:
    from distill import api
    from distill.report.markdown import load_report, print_table

    if getattr(args, "handler", None) is not None:
        return int(args.handler(args) or 0)
    if args.command == "list":
        print("\n".join(list_names(args.what)))
        return 0
    if args.command == "info":
        if not (args.run_dir / "report.json").is_file():
            raise DistillError(f"{args.run_dir} has no report.json; is it a finished run directory?")
        print_table(load_report(args.run_dir))
        return 0
    if args.command == "evaluate":
        print(json.dumps(api.evaluate(args.model_dir, args.recipe, args.split, args.overrides), indent=2))
        return 0
    from distill.commands.text import is_text_recipe, run_recipe

    if is_text_recipe(args.recipe):  # task: text: the text pipeline behind the same three commands
        if args.resume:
            raise DistillError("text runs do not resume; rerun without --resume (the fine-tuned teacher is cached)")
        teacher = getattr(args, "teacher", None)
        return run_recipe(args.recipe, args.overrides, args.out, args.overwrite, args.command == "train", teacher)
    kw = {"out": args.out, "overrides": args.overrides, "overwrite": args.overwrite, "resume": args.resume}
    if args.command == "run":
        report = api.run(args.recipe, **kw)
    elif args.command == "train":
        report = api.train(args.recipe, **kw)
    else:
        report = api.distill(args.recipe, args.teacher, **kw)
    if report.get("rank"):  # under torchrun, rank 0 alone prints
        return 0
    print_table(report)
    print(f"run directory: {report['out']}")
    return 0


def list_names(what: str) -> list[str]:
    if what == "models":
        from distill.models.zoo import model_names

        return model_names()
    if what == "methods":
        from distill.distillers import DISTILLERS

        return DISTILLERS.names()
    from distill.data.base import dataset_names

    return dataset_names()


if __name__ == "__main__":
    sys.exit(main())
