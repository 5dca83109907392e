"""`distill keygen`, `distill sign`, `distill verify`: ed25519 signatures for model directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.errors import DistillError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keygen", help="create an ed25519 key pair for signing models")
    p.add_argument("--out", type=Path, required=True, help="path prefix: writes PREFIX.key (private) and PREFIX.pub")
    p.set_defaults(handler=_keygen)
    p = sub.add_parser("sign", help="sign a model directory")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--key", type=Path, required=True, help="private key (PEM)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing signature.json")
    p.set_defaults(handler=_sign)
    p = sub.add_parser("verify", help="verify a model directory's signature and file hashes")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--key", type=Path, required=True, help="public key (PEM)")
    p.set_defaults(handler=_verify)


def key_paths(prefix: Path) -> tuple[Path, Path]:
    """``PREFIX.key`` and ``PREFIX.pub``, appending the suffix so a dotted name (``team.v2``) keeps its dot."""
    if not prefix.name or prefix.name in (".", ".."):
        raise DistillError(f"--out {prefix} must end in a file name prefix, e.g. keys/team")
    if prefix.is_dir():
        raise DistillError(f"--out {prefix} is a directory; give a path prefix inside it, e.g. {prefix / 'team'}")
    base = prefix.with_name(prefix.name[: -len(prefix.suffix)]) if prefix.suffix in (".key", ".pub") else prefix
    return base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")


def _keygen(args: argparse.Namespace) -> int:
    from distill.trust import generate_keypair

    private, public = key_paths(args.out)
    fp = generate_keypair(private, public)
    print(f"wrote {private} (private, keep it secret) and {public}; fingerprint {fp[:16]}…")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from distill.trust import SIGNATURE, sign_model

    if (args.model_dir / SIGNATURE).exists() and not args.overwrite:
        raise DistillError(
            f"{args.model_dir} is already signed ({SIGNATURE}); pass --overwrite to replace the signature"
        )
    print(f"signed: {sign_model(args.model_dir, args.key)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from distill.trust import verify_model

    files = verify_model(args.model_dir, args.key)
    print(f"OK: {args.model_dir} — signature valid, {len(files)} files unchanged")
    return 0
