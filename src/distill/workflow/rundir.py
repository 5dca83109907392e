"""Output directories: which ones a command may create, resume or replace (``--overwrite``), and how.

Every directory distill creates as an output root gets the marker file :data:`MARKER` (``.distill-run.json``,
``{"kind": "run"|"compress"|"sweep"|"born-again"|"text", "created": ISO time, "distill": version}``) as the first
thing written into it. The rules, in one place so that every command follows them:

* **Ours**: a directory with the marker; or, for directories written before markers existed (legacy), one holding
  ``config.yaml`` plus ``manifest.json`` or ``report.json`` (a finished run; ``born_again.json``/``sweep.json``
  for those commands), or a ``manifest.json`` of format ``distill-manifest/1`` (text and compress runs), or a
  model directory (``model.json`` + ``model.safetensors``). An interrupted legacy run (``config.yaml`` alone) can
  still be resumed, but not replaced: delete it yourself.
* A missing or empty ``out`` is created (parents too) with its marker; a file is refused.
* ``--resume`` continues only a directory of the same kind: the marker's, or the caller's legacy test for
  directories without one (a run: it holds ``config.yaml``; a sweep: only a sweep's files).
* ``--overwrite`` replaces only a directory that is ours, and only when no input of the command (teacher, model,
  ensemble member, recipe, data root, key ...) is ``out``, lies inside it or contains it, and the current directory
  is not in it (compared as resolved paths): replacing it would delete what the command reads. The old directory is
  renamed aside, the new one created with its marker, and the old one deleted last: a refusal or a failure loses
  nothing.
* Filesystem errors (read-only parent, over-long name, full disk) become one-line :class:`DistillError` s.

Model directories (kind ``model``, e.g. ``distill models fetch``) get no marker: ``model.json`` +
``model.safetensors`` identify them, so a fetched directory stays identical to the registered one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distill import __version__
from distill.errors import DistillError

MARKER = ".distill-run.json"
KINDS = ("run", "compress", "sweep", "born-again", "text", "model")
_NOUNS = {"run": "run directory", "sweep": "sweep directory", "model": "model directory"}
_RESUMABLE = ("run", "sweep")  # the kinds whose commands have --resume (a sweep always resumes)

# (what it is, where) pairs: ("the teacher", "runs/base/teacher"); None paths are skipped
Inputs = Iterable[tuple[str, "str | Path | None"]]


def read_marker(directory: str | Path) -> dict[str, Any] | None:
    """The marker of ``directory``: None without one, ``{}`` when it exists but cannot be read as JSON."""
    path = Path(directory) / MARKER
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {} if path.exists() else None
    return data if isinstance(data, dict) else {}


def is_ours(directory: str | Path) -> bool:
    """Whether distill made ``directory``: the marker, or a legacy run/model directory (see the module doc)."""
    d = Path(directory)
    try:
        names = set(os.listdir(d))
    except OSError:
        return False
    if MARKER in names:
        return True
    if "config.yaml" in names and names & {"manifest.json", "report.json", "born_again.json", "sweep.json"}:
        return True
    if {"model.json", "model.safetensors"} <= names:
        return True
    if "manifest.json" in names:
        try:
            return json.loads((d / "manifest.json").read_text()).get("format") == "distill-manifest/1"
        except (OSError, ValueError, AttributeError):
            return False
    return False


def check(
    out: str | Path,
    *,
    kind: str,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Inputs = (),
    resumable: Callable[[Path], bool] | None = None,
) -> str:
    """Everything :func:`prepare` checks, writing nothing (to refuse before minutes of loading).

    Returns what :func:`prepare` would do: ``"create"``, ``"resume"`` or ``"replace"``; raises
    :class:`DistillError` with one line otherwise.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown run directory kind {kind!r}; expected one of {KINDS}")
    out = Path(out)
    try:
        exists = out.exists()
        names = os.listdir(out) if exists and out.is_dir() else None
    except OSError as e:
        raise _fs_error(out, e) from e
    if exists and names is None:
        raise DistillError(f"{out} is a file, not a directory; choose another --out")
    if not exists:
        try:
            _check_creatable(out)
        except OSError as e:
            raise _fs_error(out, e) from e
        return "create"
    if not [n for n in names or () if n != MARKER]:  # empty, or only the marker (a run stopped right after it)
        _check_access(out, out)
        return "create"
    if resume:
        marker = read_marker(out)
        if (marker is not None and marker.get("kind") == kind) or (
            marker is None and resumable is not None and resumable(out)
        ):
            return "resume"
        raise DistillError(
            f"{out} is not empty and is not a {_noun(kind)} made by distill; nothing to resume there: "
            "choose another --out"
        )
    if not overwrite:
        if is_ours(out):
            hint = (
                "pass --resume to continue it, --overwrite to replace it"
                if kind == "run"
                else "pass --overwrite to replace it"
            )
            raise DistillError(f"{out} already exists and is not empty; {hint}, or choose another --out")
        flags = "--overwrite and --resume apply" if kind == "run" else "--overwrite applies"
        raise DistillError(
            f"{out} already exists, is not empty and was not made by distill (no {MARKER}); choose another --out "
            f"({flags} only to distill's own directories)"
        )
    if not is_ours(out):
        raise DistillError(
            f"{out} already exists and was not made by distill (no {MARKER}); --overwrite replaces only distill's "
            "own directories: choose another --out"
        )
    check_inputs(out, inputs)
    cwd = _cwd()
    if cwd is not None and (cwd == _resolve(out) or _resolve(out) in cwd.parents):  # relative paths read from it
        raise DistillError(f"{out} holds the current directory; --overwrite would delete it: choose another --out")
    _check_access(out, _absolute(out).parent)  # replacing renames it there
    return "replace"


def prepare(
    out: str | Path,
    *,
    kind: str,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Inputs = (),
    resumable: Callable[[Path], bool] | None = None,
) -> str:
    """Make ``out`` ready for a command of ``kind``: create, resume or replace it, following the module's rules.

    ``inputs`` are what the command reads (``(what, path)`` pairs); ``resumable`` tells whether a directory
    without a marker may be resumed (legacy). Returns ``"create"``, ``"resume"`` or ``"replace"``, the action
    taken; nothing is changed unless every check passed.
    """
    out = Path(out)
    action = check(out, kind=kind, overwrite=overwrite, resume=resume, inputs=inputs, resumable=resumable)
    if action == "create":
        _create(out, kind)
    elif action == "replace":
        old = _aside(out)
        try:
            _create(out, kind)
        except DistillError:
            shutil.rmtree(out, ignore_errors=True)
            os.replace(old, out)  # put the old directory back: a failure loses nothing
            raise
        _remove(old)
    return action


def check_inputs(out: str | Path, inputs: Inputs) -> None:
    """Refuse to replace ``out`` when an input is ``out``, lies inside it or contains it."""
    target = _resolve(Path(out))
    for what, path in inputs:
        if path is None or str(path) == "":
            continue
        p = _resolve(Path(path))
        if p == target:
            where, lost = f"is {what}", "it"
        elif target in p.parents:
            where, lost = f"holds {what} {path}", "it"
        elif p in target.parents:
            where, lost = f"lies inside {what} {path}", "part of it"
        else:
            continue
        raise DistillError(
            f"{out} {where}, which this command reads; --overwrite would delete {lost}: choose another --out"
        )


def replace_with(out: str | Path, staged: str | Path) -> None:
    """Move the finished directory ``staged`` to ``out``; what ``out`` held is deleted only once it is in place.

    The caller has checked ``out`` with :func:`check` (``overwrite`` when it exists).
    """
    out, staged = Path(out), Path(staged)
    old = _aside(out) if out.exists() or out.is_symlink() else None
    try:
        os.replace(staged, out)
    except OSError as e:
        if old is not None:
            os.replace(old, out)
        raise _fs_error(out, e) from e
    if old is not None:
        _remove(old)


def write_marker(directory: str | Path, kind: str) -> Path:
    """Write the marker of a ``kind`` directory into ``directory``."""
    path = Path(directory) / MARKER
    created = datetime.now(UTC).isoformat(timespec="seconds")
    path.write_text(json.dumps({"kind": kind, "created": created, "distill": __version__}, indent=2) + "\n")
    return path


# -- helpers -------------------------------------------------------------------------------------------------------
def _noun(kind: str) -> str:
    return _NOUNS.get(kind, f"{kind} directory")


def _fs_error(out: Path, e: OSError) -> DistillError:
    return DistillError(f"cannot create run directory {out}: {e.strerror or e}")


def _cwd() -> Path | None:
    try:
        return Path.cwd()
    except OSError:  # deleted under us: nothing there to protect
        return None


def _absolute(p: Path) -> Path:
    return Path(os.path.abspath(p))


def _resolve(p: Path) -> Path:
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # a symlink loop, a name too long to look up
        return _absolute(p)


def _check_access(out: Path, directory: Path) -> None:
    """Refuse early when ``directory`` cannot be written (root passes: it writes anyway)."""
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DistillError(f"cannot create run directory {out}: {os.strerror(errno.EACCES)} ({directory})")


def _check_creatable(out: Path) -> None:
    """A missing ``out``: its names fit the filesystem and its nearest existing parent is a writable directory."""
    path = _absolute(out)
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path.name)
        path = path.parent
    if not path.is_dir():
        raise DistillError(f"cannot create run directory {out}: {os.strerror(errno.ENOTDIR)} ({path})")
    try:
        name_max = os.pathconf(path, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if any(len(os.fsencode(n)) > name_max for n in missing):
        raise DistillError(f"cannot create run directory {out}: {os.strerror(errno.ENAMETOOLONG)}")
    _check_access(out, path)


def _create(out: Path, kind: str) -> None:
    """Create ``out`` (and missing parents) with its marker; on a filesystem error remove what was created."""
    path, made = _absolute(out), []
    while not path.exists() and path != path.parent:
        made.append(path)
        path = path.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
        if kind != "model":
            write_marker(out, kind)
    except OSError as e:
        try:
            (out / MARKER).unlink(missing_ok=True)
        except OSError:
            pass
        for d in made:  # innermost first
            try:
                d.rmdir()
            except OSError:
                break
        raise _fs_error(out, e) from e


def _aside(out: Path) -> Path:
    """Rename ``out`` to a hidden sibling (deleted once its replacement is in place)."""
    old = _absolute(out).parent / f".distill-old-{uuid.uuid4().hex[:12]}"
    try:
        os.rename(out, old)
    except OSError as e:
        raise DistillError(f"cannot replace run directory {out}: {e.strerror or e}") from e
    return old


def _remove(old: Path) -> None:
    if old.is_symlink():  # --out was a link: drop the link, never what it points to
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)
