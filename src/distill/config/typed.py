"""Typed reading: a dataclass built from a plain mapping, with unknown keys refused (the nearest named) and every
value checked against its annotation and range (part of :mod:`distill.config`)."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from typing import Any

from distill.errors import ConfigError

MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_THREADS = 4096
FLOAT32_MAX = 3.4028234663852886e38  # what training computes in


def _require(name: str, value: Any, ok: bool, expected: str) -> None:
    """Refuse ``value`` of setting ``name`` unless ``ok``; a float must also be finite (NaN passes no comparison
    check, and inf passes ``> 0``)."""
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{name} must be {expected}, got {_show(value)}")


def _show(value: Any, limit: int = 60) -> str:
    """``repr`` of a user value, shortened: a 400-digit number or a long string must not flood the error line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def from_dict(cls: type, raw: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, refusing unknown keys (naming the nearest) and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'the recipe'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=2, cutoff=0.5)
            hint = (
                f" Did you mean {' or '.join(repr((f'{path}.' if path else '') + c) for c in close)}?" if close else ""
            )
            raise ConfigError(f"unknown key {where!r}.{hint} Valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(hints[key], value, where)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a range check in __post_init__: say where
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    except TypeError as e:  # a dataclass with required fields
        raise ConfigError(f"{path or 'recipe'}: {e}") from e


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against annotation ``tp`` (ints are accepted for floats, which must be finite)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {_show(value)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple, typing.get_origin(typing.Sequence[int])) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {_show(value)}")
        args = typing.get_args(tp)
        item = args[0] if args else Any  # tuple[int, ...] and Sequence[int] alike
        return [_coerce(item, v, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {_show(value)}")
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        out = {}
        for k, v in value.items():
            if key_tp is str and not isinstance(k, str):
                raise ConfigError(f"{where}: keys must be names (strings), got {_show(k)}")
            out[k] = _coerce(value_tp, v, f"{where}.{k}")
        return out
    if tp is Any:
        _check_finite(value, where)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {_show(value)}")
        _check_finite(value, where, number=True)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_show(value)}")
        return value
    raise _Unsupported(f"{where}: unsupported type {tp}")


class _Unsupported(ConfigError):
    """An annotation the recipe checker does not know (a schema bug in a dataclass; skipped by check_value)."""


def _check_finite(value: Any, where: str, number: bool = False) -> None:
    """Refuse NaN and infinity (YAML's ``.nan``/``.inf``, or ``1.0e+999``) anywhere in ``value``: no setting means
    "unbounded" by infinity, and NaN passes every range check. Training computes in float32, so a float (or, where
    a ``number`` is expected, an int) beyond float32's range is infinite there and refused too."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}", number)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}.{i}", number)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int beyond any float
            finite = False
        if not finite:
            raise ConfigError(f"{where} must be a finite number, got {_show(value)}")
        if (number or isinstance(value, float)) and abs(value) > FLOAT32_MAX:
            raise ConfigError(f"{where} must be a number within ±{FLOAT32_MAX:.3g} (float32), got {_show(value)}")


def check_value(annotation: Any, value: Any, where: str) -> None:
    """Check a keyword argument against its annotation (a type, or a string from ``from __future__ import
    annotations``) the way recipe values are checked; an annotation naming other types checks finiteness only.

    For the ``**kwargs``-like parts of a recipe (method params, data options): their functions' signatures are the
    schema.
    """
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, {"__builtins__": {}}, _ANNOTATION_NAMES)  # our own annotations, names only
        except Exception:  # a type we do not check (nn.Module, Path ...)
            annotation = Any
    if annotation is inspect.Parameter.empty:
        annotation = Any
    try:
        _coerce(annotation, value, where)
    except _Unsupported:
        _check_finite(value, where)


_ANNOTATION_NAMES = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "None": None,
    "list": list,
    "tuple": tuple,
    "dict": dict,
    "Any": Any,
    "Sequence": typing.Sequence,
}
