"""`distill keygen`, `distill sign`, `distill verify`: ed25519 signatures for model directories."""

from __future__ import annotations

import argparse
from pathlib import Path


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


def _keygen(args: argparse.Namespace) -> int:
    from distill.trust import generate_keypair

    fp = generate_keypair(args.out.with_suffix(".key"), args.out.with_suffix(".pub"))
    print(
        f"wrote {args.out.with_suffix('.key')} (private, keep it secret) and {args.out.with_suffix('.pub')}; "
        f"fingerprint {fp[:16]}…"
    )
    return 0


def _sign(args: argparse.Namespace) -> int:
    from distill.errors import DistillError
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
