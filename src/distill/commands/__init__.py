"""CLI plug-ins: every module here defines ``register(subparsers)``, which adds one or more subcommands whose
parser has ``set_defaults(handler=fn)``; ``fn(args) -> int`` runs it. Adding a command is adding one file."""

import argparse
import importlib
import pkgutil
from types import ModuleType


def plugins() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]


def add_overrides(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """The ``--set KEY=VALUE`` option (repeatable) every recipe-reading command takes, into ``args.overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)
