"""``distill text RECIPE``: the text distillation pipeline (:mod:`distill.text.pipeline`).

``distill run|train|distill`` hand a recipe with ``task: text`` to :func:`run_recipe` as well, so a text recipe
goes through the same commands as an image one: ``train`` fine-tunes (or loads) the teacher alone, ``distill
--teacher DIR`` distils from a teacher saved by an earlier text run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from distill.commands import add_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("text", help="distil a text classifier (e.g. MiniLM) into smaller students")
    p.add_argument("recipe", type=Path, help="a text recipe, e.g. configs/text.yaml")
    add_overrides(p)
    p.add_argument("--out", type=Path, help="the run directory (default: runs/text-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory made by distill")
    p.set_defaults(handler=run)


def is_text_recipe(path: Path) -> bool:
    from distill.config import read_yaml

    return read_yaml(path).get("task") == "text"


def run_recipe(
    recipe: Path,
    overrides: list[str],
    out: Path | None,
    overwrite: bool,
    teacher_only: bool = False,
    teacher: Path | None = None,
) -> int:
    from distill.config import apply_override, parse_override, read_yaml
    from distill.report.markdown import print_table
    from distill.text.pipeline import TextRecipe, text_inputs
    from distill.text.pipeline import run as run_text
    from distill.workflow import rundir

    raw: dict[str, Any] = read_yaml(recipe)
    for text in overrides:
        apply_override(raw, *parse_override(text))
    if teacher_only:
        raw["students"] = []
    if teacher is not None:  # the recipe's other teacher keys stay: public_key must still be checked
        recipe_teacher = raw.get("teacher")
        raw["teacher"] = {**(recipe_teacher if isinstance(recipe_teacher, dict) else {}), "checkpoint": str(teacher)}
    parsed = TextRecipe.from_dict(raw)
    inputs = [("the recipe", recipe), *text_inputs(parsed)]
    if out is not None:  # refuse a bad --out now, before the teacher is loaded (the pipeline creates it)
        rundir.check(out, kind="text", overwrite=overwrite, inputs=inputs)
    out = out or Path("runs") / f"text-{time.strftime('%Y%m%d-%H%M%S')}"
    report = run_text(parsed, out, overwrite=overwrite, inputs=inputs)
    print_table(report)
    print(f"run directory: {out} (report.html; the models under teacher/ and students/, each with its tokenizer)")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_recipe(args.recipe, args.overrides, args.out, args.overwrite)
