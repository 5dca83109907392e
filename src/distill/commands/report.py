"""``distill report RUN [RUN ...]``: one self-contained HTML page; and the ``--mlflow [URI]`` flag that this
plug-in adds to ``run``, ``train`` and ``distill``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


class MlflowFlag(argparse.Action):
    """``--mlflow`` -> ``--set tracking.mlflow=true`` (``sqlite:///<out>/mlflow.db``); ``--mlflow URI`` -> that URI."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, opt: str | None = None):
        overrides = list(getattr(ns, "overrides", None) or [])  # a copy: argparse shares the default list
        overrides.append("tracking.mlflow=true" if value is None else f"tracking.mlflow={json.dumps(str(value))}")
        ns.overrides = overrides
        setattr(ns, self.dest, value if value is not None else True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report comparing the teacher and students of runs (and sweep trials)",
        description="Accuracy and cost tables, training curves, Pareto plots, per-class accuracy, confusion "
        "matrices, agreement, calibration and the teacher's softened distribution; plots are embedded, so the "
        "file opens offline. A sweep directory (with sweep.json) adds its trials to the Pareto plots.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories (report.json) or sweeps")
    p.add_argument("--out", type=Path, help="the HTML file (default: RUN/report.html for one RUN, else report.html)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(handler=report)
    for name in ("run", "train", "distill"):
        parser = sub.choices.get(name)
        if parser is not None:
            parser.add_argument(
                "--mlflow",
                nargs="?",
                default=None,
                metavar="URI",
                action=MlflowFlag,
                help="track in MLflow: params, metrics per epoch, the report and students as artefacts "
                "(default store: sqlite:///<out>/mlflow.db)",
            )


def report(args: argparse.Namespace) -> int:
    from distill.api import write_run_html
    from distill.errors import DistillError

    out = args.out or (args.runs[0] / "report.html" if len(args.runs) == 1 else Path("report.html"))
    own = args.out is None and len(args.runs) == 1  # a run's own report.html is re-rendered in place
    if out.exists() and not (own or args.overwrite):
        raise DistillError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    path = write_run_html(args.runs, out)  # older runs: their models re-run on the recipe's test split
    print(f"report: {path}", file=sys.stdout)
    return 0
