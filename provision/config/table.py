"""The settings engine: rows (`Setting`) in a `Table` that checks a YAML mapping and builds its
frozen dataclass.

A row says everything about one key: its type and limits (hence the checks and their located
messages), its default, its help (`provision settings`), the dataclass field it fills and, for node
settings, whether it reaches the cloud-init seed. The inventory's tables are in `settings`, the
playbooks' in `playbook`; what a row cannot say (references between sections, rules across keys)
stays with the code that loads them. For example:

    NODE = Table(Node, Setting("vcpus", Kind.INT, "Virtual CPUs.", 1, minimum=1, maximum=256), ...)
    NODE.parse(value, "nodes.n1", problems, name="n1").built  # a Node, or None (all reported)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

from provision.config.yamlsrc import Value, control
from provision.core.errors import Problem

T = TypeVar("T")


class Kind(StrEnum):
    """What a row takes, and so the type of the field it fills."""

    STR = "string"  # str (a Path with file=True)
    INT = "integer"  # int
    BOOL = "boolean"  # bool
    ENUM = "one of"  # str, or the row's enum
    LIST = "list of strings"  # tuple[str, ...]
    ENUM_LIST = "list of"  # tuple of str or of the row's enum, each once, in the order given
    MAP = "mapping of key to scalar"  # tuple[tuple[str, str], ...], sorted by key
    SECTION = "mapping"  # the dataclass of the row's table


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()

# A row's own check of its YAML value, for what the kinds cannot express (an argv list, a mapping
# with a rule across its keys): the checked value, or None once its problems are reported.
Parser = Callable[[Value, str, list[Problem]], Any]


@dataclass(frozen=True)
class Setting:
    """One key of a mapping: what it takes, its default, what it means, where its value goes."""

    name: str
    kind: Kind
    help: str
    default: Any = REQUIRED
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None  # for STR, LIST items and MAP keys; the whole value must match
    table: Table[Any] | None = None  # SECTION: the rows of the nested mapping
    enum: type[StrEnum] | None = None  # ENUM, ENUM_LIST: the choices, and the field's type
    dest: str = ""  # the dataclass field the value fills; the name when not given
    # Node settings: does the value reach the cloud-init seed? A new row does unless it says not,
    # so a change nothing else watches errs towards recreating the node (desired.policy).
    seed: bool = True
    file: bool = False  # a file on this machine: ~ expands, a relative path is the inventory's
    # A path on this machine (always, for a file): ~ and ~user expand, so the user must exist,
    # and the path must fit Linux's limits, or every open of it fails.
    expands: bool = False
    convert: Callable[[Any], Any] | None = (
        None  # checked value -> field value, instead of the kind's
    )
    parse: Parser | None = None  # instead of the kind's check
    # Strings are single lines unless a row says not: a newline (or any control character)
    # in a name, a label or a path would reach a rendered file as a line of its own.
    multiline: bool = False

    def __post_init__(self) -> None:
        if not self.dest:
            object.__setattr__(self, "dest", self.name)
        if self.file:
            object.__setattr__(self, "expands", True)
        if self.enum is not None and not self.choices:
            object.__setattr__(self, "choices", tuple(e.value for e in self.enum))

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        kind = self.kind.value
        if self.choices:
            kind = f"{kind} {', '.join(self.choices)}"
        if self.minimum is not None or self.maximum is not None:
            kind = f"{kind} in [{self.minimum}, {self.maximum}]"
        return kind

    def check(
        self, value: Value, path: str, problems: list[Problem], *, base: Path | None = None
    ) -> Any:
        """The value checked (a section built), or None once its problems are reported."""
        return _check(self, value, path, problems, layer=False, base=base)


@dataclass
class Parsed(Generic[T]):
    """One mapping checked against a table: each value as checked, where it came from, the keys
    already reported, and (Table.parse, when nothing in the mapping was wrong) what it built.
    A loader's working state: only what it built leaves config/."""

    values: dict[str, Any] = field(default_factory=dict)
    locs: dict[str, Value] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)  # present but wrong: already reported
    built: T | None = None

    def result(self) -> T:
        """The built dataclass, for a caller that knows nothing was reported."""
        if self.built is None:
            raise ValueError("a section with problems is reported, never built")
        return self.built


class Table(Generic[T]):
    """The rows of one mapping and what they build: `into` (a frozen dataclass) is called with
    each row's value as its field, plus the fields the caller gives (`extra`): a name taken from
    the key above, or what a cross-reference decides. A table never changes once made."""

    __slots__ = ("_by_name", "into", "rows")

    def __init__(self, into: Callable[..., T], *rows: Setting) -> None:
        names = [r.name for r in rows]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rows named twice: {twice}")
        if dataclasses.is_dataclass(into):
            fields = {f.name for f in dataclasses.fields(into)}
            stray = [r.dest for r in rows if r.dest not in fields]
            if stray:  # caught when the module is imported, not when a user's file is read
                raise TypeError(f"{getattr(into, '__name__', into)} has no field {stray}")
        self.into = into
        self.rows = rows
        self._by_name = {r.name: r for r in rows}

    def __iter__(self) -> Iterator[Setting]:
        return iter(self.rows)

    def __getitem__(self, name: str) -> Setting:
        return self._by_name[name]

    def get(self, name: str) -> Setting | None:
        return self._by_name.get(name)

    def extended(self, *rows: Setting, into: Callable[..., Any] | None = None) -> Table[Any]:
        """This table with more rows (and, for new fields, a dataclass that has them)."""
        return Table(into or self.into, *self.rows, *rows)

    def without(self, *names: str) -> Table[T]:
        """This table without some rows: a layer that may not set them (defaults, groups)."""
        return Table(self.into, *(r for r in self.rows if r.name not in names))

    @property
    def outside_seed(self) -> frozenset[str]:
        """The fields of the rows that say they never reach the cloud-init seed."""
        return frozenset(r.dest for r in self.rows if not r.seed)

    def defaults(self) -> dict[str, Any]:
        """Every optional row's default, by key: the layer under all the others."""
        return {r.name: r.default for r in self.rows if not r.required}

    def missing(self, values: Mapping[str, Any]) -> tuple[Setting, ...]:
        """The required rows the values lack."""
        return tuple(r for r in self.rows if r.required and r.name not in values)

    def parse(
        self,
        value: Value,
        path: str,
        problems: list[Problem],
        *,
        base: Path | None = None,
        leave: Collection[str] = (),
        **extra: Any,
    ) -> Parsed[T]:
        """Check a whole mapping: unknown keys and missing required ones are errors, absent keys
        take their defaults, nested sections are built. `built` holds the dataclass when nothing in
        the mapping was wrong. `leave`: keys the caller parses itself; `extra`: as for build."""
        before = len(problems)
        parsed = self._check(value, path, problems, layer=False, base=base, leave=leave)
        if not value.is_map:
            return parsed
        for row in self.rows:
            if row.name in parsed.values or row.name in parsed.invalid:
                continue
            if row.required:
                problems.append(value.loc.problem(path, f"missing required key {row.name!r}"))
            else:
                parsed.values[row.name] = row.default  # absent or null: "not set"
        if len(problems) == before:
            parsed.built = self.build(parsed.values, base=base, **extra)
        return parsed

    def layer(self, value: Value, path: str, problems: list[Problem]) -> Parsed[T]:
        """Check one layer of a mapping merged later (defaults, a group, a node): every key given
        is checked, nested sections stay layers too, and nothing is missing yet."""
        return self._check(value, path, problems, layer=True, base=None, leave=())

    def build(self, values: Mapping[str, Any], *, base: Path | None = None, **extra: Any) -> T:
        """The dataclass from checked values (absent keys take their defaults). `extra` gives the
        fields no row fills, and overrides a row whose value the caller has decided itself."""
        fields: dict[str, Any] = {}
        for row in self.rows:
            if row.dest in extra:
                continue
            data = values.get(row.name, row.default)
            if data is REQUIRED:
                raise ValueError(f"no value for required key {row.name!r}: check before building")
            fields[row.dest] = _field(row, data, base)
        return self.into(**fields, **extra)

    def lines(self, title: str) -> list[str]:
        """The table as `provision settings` prints it."""
        out = [f"{title}:"]
        for s in self.rows:
            default = "required" if s.required else f"default {s.default!r}"
            out.append(f"  {s.name:<18} {s.describe()}; {default}")
            out.append(f"  {'':<18} {s.help}")
        out.append("")
        return out

    def _check(
        self,
        value: Value,
        path: str,
        problems: list[Problem],
        *,
        layer: bool,
        base: Path | None,
        leave: Collection[str],
    ) -> Parsed[T]:
        parsed: Parsed[T] = Parsed()
        if not value.is_map:
            problems.append(
                value.loc.problem(path, f"expected a mapping, got {type_name(value.data)}")
            )
            return parsed
        for key, item in value.data.items():
            if key in leave:
                continue
            sub = f"{path}.{key}" if path else key
            row = self._by_name.get(key)
            if row is None:
                problems.append(
                    value.key_locs[key].problem(sub, f"unknown key{closest(key, self)}")
                )
                continue
            # An explicit null leaves an optional setting unset (`snapshot: ~`); a section given
            # as null is still an error: a mapping must be a mapping.
            if item.data is None and row.default is None and row.kind is not Kind.SECTION:
                continue
            result = _check(row, item, sub, problems, layer=layer, base=base)
            if result is None:
                parsed.invalid.add(key)
            else:
                parsed.values[key] = result
                parsed.locs[key] = item
        return parsed


def type_name(data: Any) -> str:
    """What a wrong value is, for messages: `got str 'x'`, `got a mapping`, `got null`."""
    if data is None:
        return "null"
    if isinstance(data, dict):
        return "a mapping"
    if isinstance(data, list):
        return "a list"
    return f"{type(data).__name__} {data!r}"


def closest(key: str, known: Iterable[str | Setting]) -> str:
    """The hint after `unknown key`: the closest known name, or all of them."""
    names = sorted(k.name if isinstance(k, Setting) else k for k in known)
    match = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {match[0]!r}?)" if match else f" (known: {', '.join(names)})"


def _check(
    setting: Setting,
    value: Value,
    path: str,
    problems: list[Problem],
    *,
    layer: bool,
    base: Path | None,
) -> Any:
    if setting.parse is not None:
        return setting.parse(value, path, problems)
    bad = value.loc.problem
    if setting.kind in (Kind.LIST, Kind.ENUM_LIST):
        if not value.is_list:
            problems.append(bad(path, f"expected a list, got {type_name(value.data)}"))
            return None
        item = Setting(
            setting.name,
            Kind.STR if setting.kind is Kind.LIST else Kind.ENUM,
            setting.help,
            choices=setting.choices,
            pattern=setting.pattern,
            expands=setting.expands,
        )
        items = [_scalar(item, v, f"{path}[{i}]", problems) for i, v in enumerate(value.data)]
        return None if None in items else tuple(items)
    if setting.kind is Kind.MAP:
        if not value.is_map:
            problems.append(bad(path, f"expected a mapping, got {type_name(value.data)}"))
            return None
        out: dict[str, str] = {}
        for key, v in value.data.items():
            sub = f"{path}.{key}"
            text = str(v.data).lower() if isinstance(v.data, bool) else str(v.data)
            if (setting.pattern and not re.fullmatch(setting.pattern, key)) or control(key):
                problems.append(value.key_locs[key].problem(sub, f"{key!r} is not a valid key"))
            elif v.is_map or v.is_list or v.data is None:
                problems.append(v.loc.problem(sub, f"expected a scalar, got {type_name(v.data)}"))
            elif control(text):
                problems.append(v.loc.problem(sub, _control_message(text)))
            else:
                out[key] = text
        return out
    if setting.kind is Kind.SECTION:
        if not value.is_map:
            problems.append(bad(path, f"expected a mapping, got {type_name(value.data)}"))
            return None
        if setting.table is None:
            return value  # a mapping the caller parses itself (the inventory's named sections)
        if layer:
            return setting.table.layer(value, path, problems).values
        return setting.table.parse(value, path, problems, base=base).built
    return _scalar(setting, value, path, problems)


def _scalar(setting: Setting, value: Value, path: str, problems: list[Problem]) -> Any:
    data = value.data
    bad = value.loc.problem
    if setting.kind is Kind.BOOL:
        if not isinstance(data, bool):
            problems.append(
                bad(path, f"expected a boolean (true/false), got {type_name(value.data)}")
            )
            return None
        return data
    if setting.kind is Kind.INT:
        if isinstance(data, bool) or not isinstance(data, int):
            problems.append(bad(path, f"expected an integer, got {type_name(value.data)}"))
            return None
        lo, hi = setting.minimum, setting.maximum
        if (lo is not None and data < lo) or (hi is not None and data > hi):
            problems.append(bad(path, f"{data} is out of range [{lo}, {hi}]"))
            return None
        return data
    if not isinstance(data, str):
        problems.append(bad(path, f"expected a string, got {type_name(value.data)}"))
        return None
    if setting.choices and data not in setting.choices:
        problems.append(bad(path, f"{data!r} is not one of: {', '.join(setting.choices)}"))
        return None
    if not setting.multiline and control(data):
        problems.append(bad(path, _control_message(data)))
        return None
    if setting.pattern and not re.fullmatch(setting.pattern, data):
        problems.append(bad(path, f"{data!r} is not a valid {setting.name}"))
        return None
    message = _path_problem(data) if setting.expands else None
    if message:
        problems.append(bad(path, message))
        return None
    return data


PATH_MAX = 4096  # bytes, with the terminating NUL (linux/limits.h)
NAME_MAX = 255  # bytes of one path component


def _path_problem(text: str) -> str | None:
    try:
        full = Path(text).expanduser()
    except RuntimeError:  # pathlib's "Could not determine home directory"
        user = text[1:].partition("/")[0]
        return f"{text[:80]!r}: no user {user!r} on this machine to expand ~"
    if len(str(full).encode()) >= PATH_MAX:
        return f"a path of {len(str(full).encode())} bytes (Linux takes under {PATH_MAX})"
    longest = max((len(part.encode()) for part in full.parts), default=0)
    if longest > NAME_MAX:
        return f"a path component of {longest} bytes (Linux takes up to {NAME_MAX})"
    return None


def _control_message(text: str) -> str:
    return f"{text!r} contains the control character {control(text)!r}: one line of text only"


def _field(setting: Setting, data: Any, base: Path | None) -> Any:
    """A checked value (or a default) as the dataclass takes it: see Kind."""
    if data is None:
        return None
    if setting.convert is not None:
        return setting.convert(data)
    if setting.file:
        path = Path(data).expanduser()
        return path if path.is_absolute() or base is None else base / path
    if setting.kind is Kind.ENUM:
        return setting.enum(data) if setting.enum else data
    if setting.kind is Kind.ENUM_LIST:
        once = tuple(dict.fromkeys(data))  # a role named twice is the role
        return tuple(setting.enum(d) for d in once) if setting.enum else once
    if setting.kind is Kind.LIST:
        return tuple(data)
    if setting.kind is Kind.MAP:
        return tuple(sorted(data.items()))
    if setting.kind is Kind.SECTION and setting.table is not None and isinstance(data, dict):
        return setting.table.build(data, base=base)
    return data
