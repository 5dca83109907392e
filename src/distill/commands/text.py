"""``distill text RECIPE``: the text distillation pipeline (:mod:`distill.text.pipeline`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("text", help="distil a text classifier (e.g. MiniLM) into smaller students")
    p.add_argument("recipe", type=Path, help="a text recipe, e.g. configs/text.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, help="the run directory (default: runs/text-<time>)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing, non-empty --out")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import time

    from distill.config import apply_override, parse_override, read_yaml
    from distill.errors import DistillError
    from distill.report.markdown import print_table
    from distill.text.pipeline import TextRecipe
    from distill.text.pipeline import run as run_text

    if args.out is not None and args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise DistillError(
            f"{args.out} already exists and is not empty; pass --overwrite to replace its report, "
            "or choose another --out"
        )
    raw = read_yaml(args.recipe)
    for text in args.overrides:
        apply_override(raw, *parse_override(text))
    out = args.out or Path("runs") / f"text-{time.strftime('%Y%m%d-%H%M%S')}"
    report = run_text(TextRecipe.from_dict(raw), out)
    print_table(report)
    print(f"run directory: {out} (report.html, report.json, models under teacher/ and students/)")
    return 0
