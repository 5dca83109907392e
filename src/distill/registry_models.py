"""Named, numbered model versions in MLflow's model registry, with their lineage; local stores only.

``register`` copies a model directory's whole tree (``model.json``, ``model.safetensors`` and every other file by
its relative path, e.g. a text model's ``tokenizer/``; a signed directory must match its signature exactly) into an
MLflow run's artefacts beside a local SQLite store and creates a version of the registered model pointing at them.
Lineage is kept as version tags (``distill.*``): the teacher (path, weights sha256 and, when it is registered too,
its name and version), the recipe of the run the model came from, the data fingerprint, the weights sha256, the
sha256 of every registered file (by relative POSIX path) and the signer. ``fetch`` copies a version out, subfolders
included, and refuses it unless every file still has its registered sha256 (and, with a public key, a valid
signature).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from distill.artifacts import read_model_spec, sha256_file
from distill.errors import CheckpointError, ConfigError, DistillError
from distill.trust import FORMAT, model_tree, sign_model, verify_model
from distill.workflow import rundir

EXPERIMENT = "distill-registry"
TAG = "distill."
_CLIENTS: dict[str, Any] = {}


def store_uri(uri: str | Path | None = None) -> str:
    """``None`` -> ``sqlite:///<cwd>/mlruns.db``; a path -> ``sqlite:///<path>``; only local SQLite URIs."""
    if uri is None:
        return f"sqlite:///{(Path.cwd() / 'mlruns.db').resolve().as_posix()}"
    text = str(uri)
    if "://" not in text:
        return f"sqlite:///{Path(text).resolve().as_posix()}"
    if not text.startswith("sqlite:///"):
        raise ConfigError(f"registry URI {text!r} is not local; use sqlite:///PATH/TO/FILE.db or a file path")
    return text


def _client(uri: str) -> tuple[Any, str]:
    """An MlflowClient for the store (opened once per process: the first open of a SQLite store takes seconds)."""
    if uri in _CLIENTS:
        return _CLIENTS[uri]
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            raise ConfigError("the model registry needs the mlflow package: pip install 'mlflow>=2.10'") from e
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" chatter on stderr
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:  # artefacts beside the database, never in the current directory or on a server
        location = (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
        exp_id = client.create_experiment(EXPERIMENT, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    _CLIENTS[uri] = (client, exp_id)
    return client, exp_id


def _tree(directory: Path) -> dict[str, Path]:
    """Every regular file under ``directory`` by relative POSIX path, sorted; a symbolic link is refused."""
    return model_tree(directory, "registered", " (copy the file in its place)")


def _model_files(directory: Path, resign: bool = False) -> dict[str, Path]:
    """What a version holds: every file of the model directory tree, by relative POSIX path.

    A signed directory must match its signature exactly (no file changed, missing or added), so that the registered
    copy still verifies; with ``resign`` its ``signature.json`` is left out (the copy is signed anew), but a
    directory that no longer matches its signature is still refused: re-signing would vouch for tampered files.
    """
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a model directory (it does not exist)")
    if not (directory / "model.json").is_file() or not (directory / "model.safetensors").is_file():
        raise CheckpointError(f"{directory} is not a model directory (expected model.json and model.safetensors)")
    files = _tree(directory)
    sig = files.get("signature.json")
    if sig is None:
        return files
    try:
        body = json.loads(sig.read_text(encoding="utf-8"))
        version, signed = body.get("format", 1), body["files"]
        if not isinstance(signed, dict) or not all(isinstance(v, str) for v in signed.values()):
            raise TypeError("'files' must map paths to sha256 strings")
        if not isinstance(body.get("signer"), str):
            raise TypeError("'signer' must be a key fingerprint")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{sig} is malformed ({e}); re-sign the model (`distill sign {directory} --key KEY --overwrite`) "
            "or remove signature.json"
        ) from e
    for name, digest in signed.items():
        if name not in files:
            raise CheckpointError(f"{directory}: {name} is signed but missing; re-sign the model or restore the file")
        if sha256_file(files[name]) != digest:
            raise CheckpointError(f"{directory}: {name} changed after signing (tampered or corrupted); not registered")
    if resign:
        return {n: f for n, f in files.items() if n != "signature.json"}
    if version != FORMAT:
        raise CheckpointError(
            f"{sig} is a format-{version} signature, which `models fetch --key` refuses; re-sign the directory with "
            f"`distill sign {directory} --key KEY --overwrite` or register it with --key"
        )
    added = [n for n in files if n not in signed and n != "signature.json"]
    if added:
        more = f" and {len(added) - 5} more" if len(added) > 5 else ""
        raise CheckpointError(
            f"{directory}: {', '.join(added[:5])}{more} not covered by the signature (added after signing); "
            "remove them, re-sign the directory, or register it with --key"
        )
    return files


def _run_dir(directory: Path) -> Path | None:
    for d in (directory, *directory.parents):
        if (d / "config.yaml").is_file() and d != directory:
            return d
    return None


def lineage(directory: Path, client: Any = None) -> dict[str, str]:
    """The ``distill.*`` tags of a model directory: teacher, recipe, data, weights and signer."""
    directory = Path(directory).resolve()
    spec = read_model_spec(directory)  # refuses a model.json without sha256 or weights that do not match it
    weights = spec["sha256"]
    tags = {
        "weights_sha256": weights,
        "model": str(spec.get("model", "")),
        "method": str(spec.get("method", "")),
        "data_name": str(spec.get("dataset", {}).get("name", "")),
        "data_fingerprint": str(spec.get("dataset", {}).get("fingerprint", "")),
    }
    teacher = spec.get("teacher")
    if teacher and (Path(teacher) / "model.safetensors").is_file():
        tdir = Path(teacher).resolve()
        digests = {sha256_file(tdir / "model.safetensors")}
        tags["teacher_path"], tags["teacher_sha256"] = str(tdir), next(iter(digests))
        done = tdir / "done.json"
        source = json.loads(done.read_text()).get("source") if done.is_file() else None
        if source and (Path(source) / "model.safetensors").is_file():  # a teacher loaded from another directory
            tags["teacher_source"] = str(Path(source).resolve())
            digests.add(sha256_file(Path(source) / "model.safetensors"))
        found = _find_by_weights(client, digests) if client is not None else None
        if found:
            tags["teacher_name"], tags["teacher_version"] = found
    elif teacher:
        tags["teacher_path"] = str(teacher)
    run = _run_dir(directory)
    if run is not None:
        recipe = (run / "config.yaml").read_text()
        tags["recipe_path"], tags["recipe_sha256"] = str(run / "config.yaml"), _sha256_text(recipe)
        if len(recipe) <= 7000:  # MLflow keeps tag values up to 8000 characters; the file is an artefact anyway
            tags["recipe"] = recipe
    return tags


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _find_by_weights(client: Any, digests: set[str]) -> tuple[str, str] | None:
    for digest in sorted(digests):
        found = client.search_model_versions(f"tags.`{TAG}weights_sha256` = '{digest}'")
        if found:
            best = max(found, key=lambda v: (v.name, int(v.version)))
            return best.name, str(best.version)
    return None


def register(
    model_dir: str | Path, name: str, uri: str | Path | None = None, private_key: str | Path | None = None
) -> dict[str, Any]:
    """Register ``model_dir`` as the next version of ``name``; returns ``{"name", "version", "tags", "uri"}``.

    With ``private_key`` a copy is signed (the directory itself is not changed) and that copy is registered.
    """
    model_dir = Path(model_dir)
    if not name or any(c in name for c in "/\\'\""):
        raise ConfigError(f"model name {name!r} must be non-empty, without slashes or quotes")
    files = _model_files(model_dir, resign=private_key is not None)
    uri = store_uri(uri)
    with tempfile.TemporaryDirectory(prefix="distill-register-") as tmp:
        staged = Path(tmp) / "model"
        staged.mkdir()
        for rel, f in files.items():  # by relative path: subfolders such as tokenizer/ are kept
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, staged / rel)
        if private_key is not None:
            sign_model(staged, private_key)  # the new signature covers the whole copied tree
        client, exp = _client(uri)
        tags = lineage(model_dir, client)
        sig = staged / "signature.json"
        tags["signer"] = json.loads(sig.read_text())["signer"] if sig.is_file() else ""
        tags["files_sha256"] = json.dumps({rel: sha256_file(f) for rel, f in _tree(staged).items()}, sort_keys=True)
        tags["source_dir"] = str(model_dir.resolve())
        run = client.create_run(exp, run_name=f"register-{name}")
        run_id = run.info.run_id
        client.log_artifacts(run_id, str(staged), artifact_path="model")
        if "recipe_path" in tags:
            client.log_artifact(run_id, tags["recipe_path"], artifact_path="recipe")
        client.set_terminated(run_id, "FINISHED")
    try:
        client.get_registered_model(name)
    except Exception:  # MlflowException(RESOURCE_DOES_NOT_EXIST)
        client.create_registered_model(name, description="a distill model; lineage in the distill.* version tags")
    mv = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run_id, tags={TAG + k: v for k, v in tags.items()}
    )
    return {"name": name, "version": int(mv.version), "tags": tags, "uri": uri}


def versions(name: str | None = None, uri: str | Path | None = None) -> list[dict[str, Any]]:
    """Every version (of ``name``, or of all models), oldest first, with its ``distill.*`` tags."""
    uri = store_uri(uri)
    client, _ = _client(uri)
    if name is not None:
        try:
            client.get_registered_model(name)
        except Exception as e:
            known = sorted(m.name for m in client.search_registered_models())
            raise DistillError(f"no registered model {name!r} in {uri}; registered: {known}") from e
    found = client.search_model_versions(f"name = '{name}'" if name else "")
    rows = [
        {
            "name": v.name,
            "version": int(v.version),
            "source": v.source,
            "created": v.creation_timestamp,
            "tags": {k[len(TAG) :]: t for k, t in v.tags.items() if k.startswith(TAG)},
        }
        for v in found
    ]
    return sorted(rows, key=lambda r: (r["name"], r["version"]))


def fetch(
    name: str,
    version: int,
    out: str | Path,
    uri: str | Path | None = None,
    public_key: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy version ``version`` of ``name`` into ``out`` after checking every file's sha256 (and the signature).

    Nothing is written into ``out`` unless all checks pass; an existing non-empty ``out`` needs ``overwrite`` and
    must be a model directory, not the store nor anything else the fetch reads (:mod:`distill.workflow.rundir`).
    """
    out = Path(out)
    uri = store_uri(uri)
    inputs: list[tuple[str, str | Path | None]] = [
        ("the registry store", uri[len("sqlite:///") :]),
        ("the public key", public_key),
    ]
    rundir.check(out, kind="model", overwrite=overwrite, inputs=inputs)
    client, _ = _client(uri)
    try:
        mv = client.get_model_version(name, str(version))
    except Exception as e:
        have = [r["version"] for r in versions(name, uri)]
        raise DistillError(f"{name} has no version {version} in {uri}; it has versions {have}") from e
    src = urlparse(mv.source)
    if src.scheme != "file":
        raise DistillError(f"{name} v{version} is stored at {mv.source}, which is not a local file location")
    src_dir = Path(unquote(src.path))
    expected = _registered_files(mv.tags.get(TAG + "files_sha256"), f"{name} v{version}")
    inputs.append(("the registered files", src_dir))
    rundir.check(out, kind="model", overwrite=overwrite, inputs=inputs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".distill-fetch-", dir=out.parent))
    except OSError as e:
        raise DistillError(f"cannot create {out}: {e.strerror or e}") from e
    try:
        for rel in expected:  # restored by relative path, subfolders included
            if not (src_dir / rel).is_file():
                raise CheckpointError(f"{name} v{version}: {rel} is missing from {src_dir}")
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src_dir / rel, staged / rel)
        _check(staged, expected, mv.tags.get(TAG + "weights_sha256"), f"{name} v{version}")
        if public_key is not None:
            verify_model(staged, public_key)
        rundir.replace_with(out, staged)  # what out held is deleted only once the new files are in place
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return out


def _registered_files(text: str | None, what: str) -> dict[str, str]:
    """The ``files_sha256`` tag: ``{relative POSIX path: sha256}``; paths that could leave the directory are refused."""
    if not text:
        raise CheckpointError(f"{what} carries no file hashes ({TAG}files_sha256); it was not made by distill")
    try:
        files = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{what}: the {TAG}files_sha256 tag is not JSON ({e}); it was altered") from e
    if not isinstance(files, dict) or not files or not all(isinstance(v, str) for v in files.values()):
        raise CheckpointError(f"{what}: the {TAG}files_sha256 tag is not a map of file names to sha256; it was altered")
    for rel in files:
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise CheckpointError(
                f"{what}: registered file name {rel!r} is not a plain relative path inside the model directory; "
                "the version's tags were altered"
            )
    if "model.json" not in files or "model.safetensors" not in files:
        raise CheckpointError(f"{what}: the registered files lack model.json or model.safetensors; it was altered")
    return files


def _check(directory: Path, expected: dict[str, str], weights: str | None, what: str) -> None:
    changed = sorted(n for n, d in expected.items() if sha256_file(directory / n) != d)
    if changed:
        raise CheckpointError(
            f"{what}: {', '.join(changed)} no longer match the registered sha256 (tampered or corrupted)"
        )
    try:
        spec = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what}: model.json is not valid JSON ({e})") from e
    digest = spec.get("sha256") if isinstance(spec, dict) else None
    if not isinstance(digest, str) or not digest:
        raise CheckpointError(
            f"{what}: model.json records no sha256 of model.safetensors, so the weights cannot be checked "
            "(distill always writes one)"
        )
    actual = sha256_file(directory / "model.safetensors")
    if actual != weights or digest != actual:
        raise CheckpointError(f"{what}: model.safetensors does not match its registered sha256")
