"""The ``distill`` command: thin subcommands over :mod:`distill.api`; choices come from the registries."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from distill.commands import add_overrides
from distill.errors import DistillError, Interrupted, sigterm_as_interrupt


def _recipe_args(p: argparse.ArgumentParser, out: bool = True) -> None:
    add_overrides(p, "override a recipe value, e.g. --set train.epochs=3 (repeatable)")
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
        with sigterm_as_interrupt():  # SIGTERM (schedulers, containers) ends a command like Ctrl-C
            return dispatch(args)
    except DistillError as e:
        if args.debug:
            raise
        print(f"distill: error: {one_line(e)}", file=sys.stderr)
        return 2
    except (OSError, UnicodeError) as e:  # the user's files, disk or encodings, wherever they fail: not a bug
        if args.debug:
            raise
        print(f"distill: error: {environment_error(e)}", file=sys.stderr)
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
        return 128 + e.signum if isinstance(e, Interrupted) else 130  # the shell's code for death by that signal


def one_line(e: BaseException) -> str:
    """An error's message on one line (a wrapped library message may span several)."""
    return " ".join(str(e).split())


def _short(path: str, limit: int = 120) -> str:
    return path if len(path) <= limit else f"{path[:60]}…{path[-40:]}"


def environment_error(e: OSError | UnicodeError) -> str:
    """The one line ``main`` prints for an OSError or a text-encoding error raised anywhere under a command.

    These are about the user's environment, not distill's code: a directory that cannot be written, a path that is
    too long, a full disk, a file that is not text. The message names the path and the reason; ``--debug`` shows
    where it happened.
    """
    if isinstance(e, UnicodeDecodeError):
        return (
            f"cannot read a file as {e.encoding} text (byte 0x{e.object[e.start]:02x} at offset {e.start}: "
            f"{e.reason}); is it a text file, saved as UTF-8?"
        )
    if isinstance(e, UnicodeEncodeError):
        return (
            f"cannot encode {e.object[e.start : e.end]!r} as {e.encoding}; use a UTF-8 locale or set "
            "PYTHONIOENCODING=utf-8"
        )
    if isinstance(e, UnicodeError):
        return f"text encoding error: {one_line(e)}"
    reason = e.strerror or one_line(e) or type(e).__name__
    if e.filename is None:
        return f"{reason} (errno {e.errno})" if e.errno else reason
    path = os.fsdecode(e.filename)
    shown = _short(path)
    if e.errno == errno.ENAMETOOLONG:
        longest = max((len(os.fsencode(part)) for part in Path(path).parts), default=0)
        return (
            f"path too long: '{shown}' ({len(os.fsencode(path))} bytes, its longest name {longest}; the system allows "
            "255 per name): choose a shorter path"
        )
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write '{shown}': {reason}; free some space or choose another location"
    if e.errno == errno.EROFS:
        verb = "write"
    elif e.errno in (errno.EACCES, errno.EPERM):
        exists = os.path.lexists(path)
        verb = "create" if not exists else "write" if os.access(path, os.R_OK) else "read"
    elif e.errno == errno.ENOTDIR:  # name the file that stands where a directory is needed
        blocker = next((p for p in Path(path).parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            return f"cannot use '{shown}': {_short(str(blocker))} is a file, not a directory"
        verb = "use"
    elif e.errno == errno.ENOENT:
        verb = "open"
    else:
        verb = "use"
    if e.filename2 is not None:
        return f"cannot {verb} '{shown}' -> '{_short(os.fsdecode(e.filename2))}': {reason}"
    return f"cannot {verb} '{shown}': {reason}"


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
