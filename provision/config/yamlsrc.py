"""YAML loading that keeps every value's file, line and column, so errors can point at them."""

from __future__ import annotations

import re
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


# Bounds on what one file may make the loader do. An inventory of a thousand nodes is a few tens
# of thousands of values and a dozen levels deep; a few kilobytes of aliases ("billion laughs")
# would otherwise expand to billions of values, and deep nesting would exhaust Python's stack.
MAX_BYTES = 4 * 2**20
MAX_DEPTH = 64
MAX_EXPANSION = 10  # values per distinct node, once aliases are expanded (plus MIN_BUDGET)
MIN_BUDGET = 10_000

# C0, DEL and C1 controls, and the Unicode line and paragraph separators (YAML line breaks too).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def control(text: str) -> str | None:
    """The first control character in `text` (a newline, a NUL...), or None."""
    found = _CONTROL.search(text)
    return found.group() if found else None


class _TooDeep(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting beyond MAX_DEPTH (it recurses per level)."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _TooDeep(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _loc(file: str, mark: yaml.Mark) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


class _Converter:
    """Composed nodes -> Values. An alias is the node it names, met again: converting it again is
    what expands a YAML bomb, so every value made counts against MAX_VALUES, and a recursive
    alias (`&a [*a]`) stops at MAX_DEPTH."""

    def __init__(self, file: str, root: yaml.Node) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.made = 0
        self.budget = MIN_BUDGET + MAX_EXPANSION * _distinct(root)
        # One constructor for every scalar: SafeLoader's resolver and constructor give YAML 1.1
        # types (int, bool, null, str...).
        self.loader = yaml.SafeLoader("")

    def convert(self, node: yaml.Node, path: str, depth: int = 0) -> Value:
        loc = _loc(self.file, node.start_mark)
        self.made += 1
        if self.made > self.budget or depth > MAX_DEPTH:
            what = f"more than {self.budget} values" if depth <= MAX_DEPTH else "too deep"
            raise ConfigError([loc.problem(path, f"{what} once aliases are expanded (refused)")])
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc, path, depth)
        if isinstance(node, yaml.SequenceNode):
            items = [self.convert(n, f"{path}[{i}]", depth + 1) for i, n in enumerate(node.value)]
            return Value(items, loc)
        assert isinstance(node, yaml.ScalarNode)
        try:
            return Value(self.loader.construct_object(node, deep=True), loc)
        except yaml.MarkedYAMLError as exc:
            self.problems.append(loc.problem(path, f"invalid value: {_one_line(exc.problem)}"))
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: 2026-13-01, 5000 digits
            what = _one_line(str(exc)).split(": use sys.")[0].partition(": value has")[0]
            self.problems.append(loc.problem(path, f"invalid value: {what}"))
        except (KeyError, IndexError, AttributeError):
            # SafeConstructor trusts the resolver: an explicit tag on text it would not have
            # resolved to that type (`!!bool maybe`, `!!timestamp x`, `!!int ''`) breaks it.
            tag = node.tag.rpartition(":")[2]
            self.problems.append(loc.problem(path, f"invalid value: {node.value!r} is not a {tag}"))
        return Value(None, loc)

    def _mapping(self, node: yaml.MappingNode, loc: Loc, path: str, depth: int) -> Value:
        items: dict[str, Value] = {}
        key_locs: dict[str, Loc] = {}
        for key_node, value_node in node.value:
            key_loc = _loc(self.file, key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(key_loc.problem(path, "mapping keys must be plain strings"))
                continue
            key = str(key_node.value)
            if control(key):  # a key path is printed: it must stay one line
                where = f"{path}.{key!r}" if path else repr(key)
                self.problems.append(key_loc.problem(where, "a key with a control character"))
                continue
            sub = f"{path}.{key}" if path else key
            if key in items:
                self.problems.append(key_loc.problem(sub, "duplicate key"))
                continue
            key_locs[key] = key_loc
            items[key] = self.convert(value_node, sub, depth + 1)
        return Value(items, loc, key_locs)


def _distinct(root: yaml.Node) -> int:
    """How many nodes the document has, each alias counted once (no recursion: none is bounded)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack += [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return len(seen)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def load(path: Path) -> Value:
    """Parse one YAML document; raise ConfigError (located) on syntax errors or a missing file."""
    file = str(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(file, 0, 0, "", f"cannot read: {exc.strerror}")]) from exc
    if len(data) > MAX_BYTES:
        raise ConfigError([Problem(file, 1, 1, "", f"larger than {MAX_BYTES} bytes (refused)")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot start a character here"
        raise ConfigError([Problem(file, line, col, "", message)]) from exc
    return loads(text, file)


def loads(text: str, file: str) -> Value:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = _one_line(" ".join(p for p in (exc.context, exc.problem) if p))
        raise ConfigError([Problem(file, line, col, "", f"YAML syntax error: {what}")]) from exc
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (a NUL, most controls): located by its position.
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"YAML error: character {chr(exc.character)!r} is not allowed in YAML text"
        raise ConfigError([Problem(file, line, col, "", message)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"YAML error: {_one_line(str(exc))}")]) from exc
    if node is None:
        return Value({}, Loc(file, 1, 1))
    converter = _Converter(file, node)
    try:
        value = converter.convert(node, "")
    finally:
        converter.loader.dispose()
    if converter.problems:
        raise ConfigError(converter.problems)
    return value
