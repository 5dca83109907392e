"""``distill register`` and ``distill models list|fetch``: students as named, numbered versions in MLflow's model
registry (a local SQLite store), with their lineage; see :mod:`distill.registry_models`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_URI_HELP = "registry store: sqlite:///PATH.db or a file path (default: sqlite:///<cwd>/mlruns.db); local only"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "register",
        help="register a model directory as the next version of a named model (MLflow registry, local SQLite)",
        description="Lineage is kept as version tags: teacher (path, sha256, registered name/version), recipe, "
        "data fingerprint, weights sha256, signer.",
    )
    p.add_argument("model_dir", type=Path)
    p.add_argument("--name", required=True, help="the registered model's name")
    p.add_argument("--uri", help=_URI_HELP)
    p.add_argument("--key", type=Path, help="private key: register a signed copy (the directory is not changed)")
    p.set_defaults(handler=_register)

    p = sub.add_parser("models", help="registered models: list versions with their lineage, fetch one")
    msub = p.add_subparsers(dest="models_command", required=True)
    q = msub.add_parser("list", help="versions with their lineage")
    q.add_argument("name", nargs="?", help="one registered model (default: all)")
    q.add_argument("--uri", help=_URI_HELP)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=_list)
    q = msub.add_parser("fetch", help="copy a registered version out, verifying sha256 (and signature)")
    q.add_argument("name")
    q.add_argument("--version", type=int, required=True)
    q.add_argument("--out", type=Path, required=True, help="the model directory to create")
    q.add_argument("--uri", help=_URI_HELP)
    q.add_argument("--key", type=Path, help="public key: refuse a version without a valid signature by it")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    q.set_defaults(handler=_fetch)


def _register(args: argparse.Namespace) -> int:
    from distill.registry_models import register

    r = register(args.model_dir, args.name, args.uri, args.key)
    t = r["tags"]
    print(f"registered {r['name']} version {r['version']} in {r['uri']}")
    print(f"  weights sha256 {t['weights_sha256'][:16]}…  signer {t['signer'][:16] or '(unsigned)'}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from distill.registry_models import versions

    rows = versions(args.name, args.uri)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no registered models")
    for r in rows:
        t = r["tags"]
        teacher = (
            f"{t['teacher_name']} v{t['teacher_version']}" if t.get("teacher_name") else t.get("teacher_path", "-")
        )
        print(
            f"{r['name']} v{r['version']}: {t.get('model', '?')} {t.get('method', '')}".rstrip()
            + f"  weights {t.get('weights_sha256', '')[:12]}  teacher {teacher}"
            + f"  data {t.get('data_name', '')}:{t.get('data_fingerprint', '')[:12]}"
            + f"  recipe {t.get('recipe_sha256', '-')[:12]}  signer {t.get('signer', '')[:12] or '-'}"
        )
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from distill.registry_models import fetch

    out = fetch(args.name, args.version, args.out, args.uri, args.key, overwrite=args.overwrite)
    checked = "sha256 and signature verified" if args.key else "sha256 verified"
    print(f"fetched {args.name} v{args.version} into {out} ({checked})")
    return 0
