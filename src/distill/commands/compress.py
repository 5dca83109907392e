"""``distill compress``: prune → distil to recover → int8 → ONNX a saved model, with a report of every stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.commands import add_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="prune, recover by distillation, quantize and export a saved model",
        description="Input model -> prune -> distil to recover -> int8 -> ONNX; every stage optional (recipe).",
    )
    p.add_argument("--model", type=Path, required=True, help="a model directory (model.json + model.safetensors)")
    p.add_argument("--recipe", type=Path, help="compress recipe, e.g. configs/compress.yaml (default: built-in)")
    add_overrides(p, "override a recipe value, e.g. --set prune.ratio=0.3 --set quantize.enabled=false (repeatable)")
    p.add_argument("--out", type=Path, help="output directory (default: runs/compress-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument(
        "--key",
        type=Path,
        metavar="PUB",
        help="public key (PEM): refuse the input model (and recover.teacher) without a valid signature by it",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from distill.compress.pipeline import compress, markdown

    report = compress(args.model, args.recipe, args.out, args.overrides, overwrite=args.overwrite, public_key=args.key)
    print(markdown(report))
    print(f"output directory: {report['out']}")
    return 0
