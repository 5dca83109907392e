"""``distill import``: a teacher trained elsewhere -> a model directory that every command loads (see
:mod:`distill.importer`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distill.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="a teacher trained elsewhere (state dict, torchvision/timm, ONNX, Hugging Face) -> a model directory",
        description="Writes model.json + model.safetensors (with sha256) into --out. The weights are read without "
        "running code from them (safetensors, or torch.load(weights_only=True)); the preprocessing the teacher was "
        "trained with is recorded and applied to whatever data it is later fed.",
    )
    src = p.add_argument_group("the model (one of)")
    src.add_argument("--arch", metavar="FILE.py:Class|module:Class", help="your nn.Module class (with --weights)")
    src.add_argument("--torchvision", metavar="NAME", help="a torchvision architecture, e.g. resnet18 (with --weights)")
    src.add_argument("--timm", metavar="NAME", help="a timm architecture (with --weights; needs timm)")
    src.add_argument("--onnx", type=Path, metavar="MODEL.onnx", help="an ONNX classifier, run as a black box")
    src.add_argument("--hf", type=Path, metavar="DIR", help="a local Hugging Face image-classification folder")
    src.add_argument("--weights", type=Path, help="state dict or checkpoint: .safetensors, .pt, .pth, .bin, .ckpt")
    src.add_argument("--arch-args", default="{}", metavar="JSON", help="constructor arguments, e.g. '{\"width\": 32}'")
    pre = p.add_argument_group("what the teacher was trained on (--dataset, or the sizes; explicit values win)")
    pre.add_argument("--dataset", help="a registered dataset: classes, input shape, mean and std from it")
    pre.add_argument("--data-root", help="where the dataset lies (data.root)")
    pre.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the dataset (data.options), e.g. path=train.csv (repeatable)",
    )
    pre.add_argument("--num-classes", type=int)
    pre.add_argument("--classes", help="class names, comma-separated")
    pre.add_argument("--input-shape", metavar="C,H,W", help="the teacher's input, e.g. 3,224,224")
    pre.add_argument("--mean", metavar="M[,M,M]", help="per-channel mean of its normalisation ([0, 1] scale)")
    pre.add_argument("--std", metavar="S[,S,S]", help="per-channel std of its normalisation")
    pre.add_argument("--channel-order", default="rgb", choices=["rgb", "bgr"])
    p.add_argument("--out", type=Path, required=True, help="the model directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.set_defaults(handler=run)


def _numbers(text: str | None, what: str, kind: type = float) -> list | None:
    if text is None:
        return None
    try:
        return [kind(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, e.g. 0.5,0.5,0.5; got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    import yaml

    from distill.importer import import_teacher

    try:
        arch_args = json.loads(args.arch_args)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--arch-args is not JSON ({e}); expected an object such as '{{\"width\": 32}}'") from e
    if not isinstance(arch_args, dict):
        raise ConfigError(f"--arch-args must be a JSON object of keyword arguments, got {args.arch_args!r}")
    options = {}
    for text in args.data_option:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--data-option {text!r} must look like KEY=VALUE, e.g. path=train.csv")
        options[key.strip()] = yaml.safe_load(value)
    spec = import_teacher(
        args.out,
        weights=args.weights,
        arch=args.arch,
        arch_args=arch_args,
        torchvision=args.torchvision,
        timm=args.timm,
        onnx=args.onnx,
        hf=args.hf,
        dataset=args.dataset,
        data_root=args.data_root,
        data_options=options,
        num_classes=args.num_classes,
        input_shape=_numbers(args.input_shape, "--input-shape", int),
        mean=_numbers(args.mean, "--mean"),
        std=_numbers(args.std, "--std"),
        classes=[c.strip() for c in args.classes.split(",")] if args.classes else None,
        channel_order=args.channel_order,
        overwrite=args.overwrite,
    )
    pre = spec["preprocessing"]
    print(
        f"imported {spec['model']} into {args.out}: {spec['num_classes']} classes, input {pre['input_shape']}, "
        f"mean {pre['mean']} std {pre['std']} ({pre['channel_order']}); sha256 {spec['sha256'][:16]}…"
    )
    return 0
