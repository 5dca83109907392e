"""Signed model directories: ed25519 signatures over the sha256 of every file, verified before loading.

``signature.json`` in a model directory holds the hash of every file of the directory tree (relative POSIX paths,
subdirectories such as a text model's ``tokenizer/`` included; only ``signature.json`` itself is left out), the
signer's public-key fingerprint and an ed25519 signature over the canonical JSON of those hashes.
:func:`verify_model` refuses a directory whose signature is missing, wrong or of an older format, whose signed files
changed or went missing, or that gained any file nobody signed — so a flipped byte anywhere is always refused.

Format history (the ``format`` field): 1 (no field) signed the top-level files only, so a changed file in a
subdirectory went unnoticed; 2 signs the whole tree. Format-1 signatures are refused with a hint to re-sign.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from distill.errors import CheckpointError, DistillError
from distill.io import sha256_file, write_json

SIGNATURE = "signature.json"
ALGORITHM = "ed25519"
FORMAT = 2  # 1: top-level files only (refused); 2: the whole tree


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # pragma: no cover - cryptography is a dependency
        raise DistillError("signing needs the 'cryptography' package: pip install cryptography") from e
    return ed25519, serialization, InvalidSignature


def generate_keypair(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new ed25519 key pair as PEM (the private key readable by the owner only); returns the fingerprint."""
    ed25519, serialization, _ = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    for p in (private_path, public_path):
        if p.exists():
            raise DistillError(f"{p} already exists; refusing to overwrite a key (choose another path)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public_path.write_bytes(pub)
    return fingerprint(public_path)


def _load_key(path: str | Path, private: bool) -> Any:
    ed25519, serialization, _ = _crypto()
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"key file {path} does not exist")
    data = path.read_bytes()
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as e:
        kind = "private" if private else "public"
        raise DistillError(f"{path} is not a PEM {kind} key ({e})") from e
    expected = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, expected):
        raise DistillError(f"{path} is not an ed25519 key; create one with `distill keygen`")
    return key


def fingerprint(public_key_path: str | Path) -> str:
    """sha256 of the raw public key bytes: a short, stable name for the signer."""
    _, serialization, _ = _crypto()
    key = _load_key(public_key_path, private=False)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def model_tree(directory: Path, purpose: str = "signed", hint: str = "") -> dict[str, Path]:
    """Every regular file under ``directory`` by relative POSIX path, sorted (what a signature or a registered
    version covers). Symbolic links are refused: a linked directory is not walked, so files reached through it would
    escape the check. ``purpose`` and ``hint`` word the refusal for the caller."""
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist")
    files: dict[str, Path] = {}
    for root, dirs, names in os.walk(directory, followlinks=False):
        base = Path(root)
        for name in sorted(dirs + names):
            p = base / name
            rel = p.relative_to(directory).as_posix()
            if p.is_symlink():
                raise CheckpointError(
                    f"{directory}: {rel} is a symbolic link; a {purpose} model directory holds regular files only{hint}"
                )
            if name in names:
                if not p.is_file():
                    raise CheckpointError(f"{directory}: {rel} is not a regular file; it cannot be {purpose}")
                files[rel] = p
    return dict(sorted(files.items()))


def _tree_files(directory: Path) -> dict[str, str]:
    """sha256 of every file of the tree (:func:`model_tree`) except the top-level signature file."""
    return {rel: sha256_file(p) for rel, p in model_tree(directory).items() if rel != SIGNATURE}


def _signed_files(directory: Path) -> dict[str, str]:
    files = _tree_files(directory)
    if "model.safetensors" not in files or "model.json" not in files:
        raise CheckpointError(f"{directory} is not a model directory (expected model.json and model.safetensors)")
    return files


def _payload(files: dict[str, str], signer: str) -> bytes:
    body = {"algorithm": ALGORITHM, "files": files, "format": FORMAT, "signer": signer}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _names(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def sign_model(directory: str | Path, private_key_path: str | Path) -> Path:
    """Sign every file of a model directory tree; writes ``signature.json`` (format :data:`FORMAT`)."""
    _, serialization, _ = _crypto()
    directory = Path(directory)
    key = _load_key(private_key_path, private=True)
    raw_pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signer = hashlib.sha256(raw_pub).hexdigest()
    files = _signed_files(directory)
    sig = key.sign(_payload(files, signer))
    out = directory / SIGNATURE
    write_json(
        out,
        {
            "format": FORMAT,
            "algorithm": ALGORITHM,
            "signer": signer,
            "files": files,
            "signature": base64.b64encode(sig).decode(),
        },
    )
    return out


def verify_model(directory: str | Path, public_key_path: str | Path) -> dict[str, str]:
    """Check the signature and every file of the tree; raises :class:`CheckpointError` on any mismatch.

    Returns the signed ``{relative path: sha256}``.
    """
    _, _, InvalidSignature = _crypto()
    directory = Path(directory)
    sig_path = directory / SIGNATURE
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist")
    if not sig_path.is_file():
        raise CheckpointError(f"{directory} is not signed (no {SIGNATURE}); sign it with `distill sign`")
    try:
        sig = json.loads(sig_path.read_text(encoding="utf-8"))
        if not isinstance(sig, dict):
            raise TypeError(f"expected a JSON object, got {type(sig).__name__}")
        version = sig.get("format", 1)
        if version == FORMAT:
            files, signer, signature = sig["files"], sig["signer"], base64.b64decode(sig["signature"], validate=True)
            if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
                raise TypeError("'files' must map paths to sha256 strings")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{sig_path} is malformed ({e}); the directory cannot be trusted") from e
    if version != FORMAT:
        what = "top-level files only" if version == 1 else "an unknown format"
        raise CheckpointError(
            f"{sig_path} is a format-{version} signature ({what}); this version of distill checks format {FORMAT} "
            f"(every file of the tree): re-sign it with `distill sign {directory} --key KEY --overwrite`"
        )
    key = _load_key(public_key_path, private=False)
    if signer != fingerprint(public_key_path):
        raise CheckpointError(f"{directory} was signed by key {str(signer)[:16]}…, not by {public_key_path}")
    try:
        key.verify(signature, _payload(files, signer))
    except InvalidSignature as e:
        raise CheckpointError(f"the signature of {directory} is invalid: {SIGNATURE} was altered") from e
    current = _tree_files(directory)
    missing = sorted(n for n in files if n not in current)
    changed = sorted(n for n in files if n in current and current[n] != files[n])
    added = sorted(n for n in current if n not in files)
    if missing:
        raise CheckpointError(f"{directory}: {_names(missing)} missing (signed, but no longer in the directory)")
    if changed:
        raise CheckpointError(f"{directory}: {_names(changed)} changed after signing (tampered or corrupted)")
    if added:
        raise CheckpointError(f"{directory}: {_names(added)} not covered by the signature (added after signing)")
    return files
