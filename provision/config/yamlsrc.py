"""YAML loading that keeps every value's file, line and column, so errors can point at them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provision.core.errors import ConfigError, Problem


@dataclass(frozen=True)
class Loc:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def problem(self, path: str, message: str) -> Problem:
        return Problem(self.file, self.line, self.col, path, message)


@dataclass(frozen=True)
class Value:
    """A YAML value with its location. Mappings keep key locations too."""

    data: Any  # scalar, dict[str, Value] or list[Value]
    loc: Loc
    key_locs: dict[str, Loc] = field(default_factory=dict)

    @property
    def is_map(self) -> bool:
        return isinstance(self.data, dict)

    @property
    def is_list(self) -> bool:
        return isinstance(self.data, list)

    def plain(self) -> Any:
        """The value without locations (for hashing and display)."""
        if isinstance(self.data, dict):
            return {k: v.plain() for k, v in self.data.items()}
        if isinstance(self.data, list):
            return [v.plain() for v in self.data]
        return self.data


def _loc(file: str, mark: yaml.Mark) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


def _convert(node: yaml.Node, file: str, problems: list[Problem], path: str) -> Value:
    loc = _loc(file, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        items: dict[str, Value] = {}
        key_locs: dict[str, Loc] = {}
        for key_node, value_node in node.value:
            key_loc = _loc(file, key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(key_loc.problem(path, "mapping keys must be plain strings"))
                continue
            key = str(key_node.value)
            sub = f"{path}.{key}" if path else key
            if key in items:
                problems.append(key_loc.problem(sub, "duplicate key"))
                continue
            key_locs[key] = key_loc
            items[key] = _convert(value_node, file, problems, sub)
        return Value(items, loc, key_locs)
    if isinstance(node, yaml.SequenceNode):
        return Value(
            [_convert(n, file, problems, f"{path}[{i}]") for i, n in enumerate(node.value)],
            loc,
        )
    assert isinstance(node, yaml.ScalarNode)
    # SafeLoader's resolver and constructor give YAML 1.1 types (int, bool, null, str...).
    loader = yaml.SafeLoader("")
    try:
        return Value(loader.construct_object(node, deep=True), loc)
    except yaml.YAMLError as exc:
        problems.append(loc.problem(path, f"invalid value: {exc}"))
        return Value(None, loc)
    finally:
        loader.dispose()


def load(path: Path) -> Value:
    """Parse one YAML document; raise ConfigError (located) on syntax errors or a missing file."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, 0, 0, "", f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(file, 0, 0, "", "not UTF-8 text")]) from exc
    return loads(text, file)


def loads(text: str, file: str) -> Value:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError([Problem(file, line, col, "", f"YAML syntax error: {what}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 0, 0, "", f"YAML error: {exc}")]) from exc
    if node is None:
        return Value({}, Loc(file, 1, 1))
    problems: list[Problem] = []
    value = _convert(node, file, problems, "")
    if problems:
        raise ConfigError(problems)
    return value
