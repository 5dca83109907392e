"""Reading recipes: YAML (safe, with duplicate keys refused) and dotted ``key.path=value`` overrides (part of
:mod:`distill.config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from distill.config.typed import _show
from distill.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.1"`` -> (["train", "lr"], 0.1); the value is read as YAML (``[1, 2]``, ``null``, ``true``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({_yaml_problem(e)})") from e
    return key.strip().split("."), value


def apply_override(raw: dict, keys: list[str], value: Any) -> None:
    node: Any = raw
    for i, k in enumerate(keys[:-1]):
        node = _list_item(node, k, keys[: i + 1]) if isinstance(node, list) else node.setdefault(k, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(
                f"cannot set {'.'.join(keys)}: {'.'.join(keys[: i + 1])} is {_show(node)}, not a mapping or a list"
            )
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit():
            where = ".".join(keys[:-1]) or "the recipe"
            raise ConfigError(f"cannot set {'.'.join(keys)}: {where} is a list; name an item by its number (0, 1 ...)")
        if int(last) >= len(node):
            raise ConfigError(f"cannot set {'.'.join(keys)}: index {last} is out of range (the list has {len(node)})")
        node[int(last)] = value
    else:
        node[last] = value


def _list_item(node: list, k: str, keys: list[str]) -> Any:
    if not k.isdigit() or int(k) >= len(node):
        raise ConfigError(f"{'.'.join(keys)}: expected a list index below {len(node)}")
    return node[int(k)]


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tags, no objects) that also refuses a key given twice in one mapping, which plain
    YAML loading resolves silently in favour of the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may repeat keys on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {_show(key)} appears twice (first at line {first.line + 1}); keep one",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (see :class:`RecipeLoader`)."""
    return yaml.load(text, Loader=RecipeLoader)  # a SafeLoader subclass: safe_load plus one check


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error's problem on one line (``str(e)`` spans several, with the file and a caret)."""
    return " ".join(str(getattr(e, "problem", None) or e).split())


def read_yaml(path: str | Path) -> dict:
    """Read a recipe file: a UTF-8 YAML mapping without tags or duplicate keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"recipe {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from e
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror or e}") from e
    try:
        raw = yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"recipe {path} is not valid YAML{where}: {_yaml_problem(e)}") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must be a YAML mapping at the top level, got {type(raw).__name__}")
    return raw
