"""The Lua scripts: one file each under workers/lua/, called by name with named KEYS and ARGV.

Every script that changes shared state runs as one atomic Lua call. The scripts live in files so
they can be read, diffed and tested as Lua, and each file opens with a header that names its
KEYS and ARGV (the layout dramatiq uses for its dispatch.lua):

    -- record_step: store a step once, keyed by its input message id.
    --
    -- KEYS
    --   board    hash: input message id -> step record
    --   task     the task hash
    -- ARGV
    --   message_id   the step's input message id
    --                (a deeper indent continues the line above)
    --
    --@include audit

The loader turns the header into a prelude, so a script says `KEY.board` and `ARG.message_id`
instead of `KEYS[1]` and `ARGV[1]`, and Python calls it with dicts:

    RECORD_STEP(client, keys={"board": ..., "task": ...}, args={"message_id": ...})

A missing, unknown or misspelled name raises ScriptArgumentError before anything reaches Redis.

`--@include NAME` (in the header, one per line) splices `workers/lua/lib/NAME.lua` in ahead of
the script's body; libraries hold shared local functions (the audit event, the budget
arithmetic), may include other libraries, and are spliced once each. The prelude also defines
`TaskStatus` from messages.status, and the loader refuses a file that spells a status literal,
so Python and Lua cannot disagree on one.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from messages.errors import ChorusError
from messages.status import TaskStatus

_ENTRY = re.compile(r"^-- {3}([a-z_][a-z0-9_]*)(?:\s|$)")
_CONTINUED = re.compile(r"^-- {5,}\S")
_SECTION = re.compile(r"^-- (KEYS|ARGV)\s*$")
_INCLUDE = re.compile(r"^--@include\s+([a-z_][a-z0-9_]*)\s*$")
_STATUS_LITERAL = re.compile(
    r"""(['"])(?:""" + "|".join(re.escape(status.value) for status in TaskStatus) + r")\1"
)


class LuaScriptError(ChorusError):
    """A Lua file breaks the loader's rules (its header, an include, a status literal)."""


class ScriptArgumentError(ChorusError, TypeError):
    """A script was called with KEYS or ARGV names its header does not declare, or without
    some it does: the message names them and the file."""


def _lua_dir() -> Any:
    return resources.files("workers") / "lua"


@dataclass(frozen=True)
class Header:
    keys: tuple[str, ...]
    args: tuple[str, ...]
    includes: tuple[str, ...]


def parse_header(name: str, text: str) -> Header:
    """The KEYS, ARGV and includes named in the leading comment block of `text`."""
    sections: dict[str, list[str]] = {"KEYS": [], "ARGV": []}
    includes: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        if match := _SECTION.match(line):
            current = sections[match[1]]
        elif match := _INCLUDE.match(line):
            includes.append(match[1])
            current = None
        elif current is not None and (match := _ENTRY.match(line)):
            if match[1] in current:
                raise LuaScriptError(f"{name}.lua declares {match[1]!r} twice")
            current.append(match[1])
        elif current is not None and not _CONTINUED.match(line):
            current = None  # a blank `--` or prose ends the section
    return Header(tuple(sections["KEYS"]), tuple(sections["ARGV"]), tuple(includes))


def _read(relative: str) -> str:
    path = _lua_dir().joinpath(*relative.split("/"))
    try:
        text: str = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LuaScriptError(f"no Lua file workers/lua/{relative}") from None
    _refuse_status_literals(relative, text)
    return text


def _refuse_status_literals(relative: str, text: str) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("--", 1)[0]
        if match := _STATUS_LITERAL.search(code):
            raise LuaScriptError(
                f"workers/lua/{relative}:{number} spells the status {match[0]}; "
                "use TaskStatus.<NAME> (the loader's prelude defines it from messages.status)"
            )


def status_prelude() -> str:
    """`local TaskStatus = {DONE = 'done', ...}`, generated from messages.status.TaskStatus."""
    entries = ", ".join(f"{status.name} = '{status.value}'" for status in TaskStatus)
    return f"local TaskStatus = {{{entries}}}\n"


def _table(name: str, source: str, names: tuple[str, ...]) -> str:
    entries = ", ".join(f"{field} = {source}[{index}]" for index, field in enumerate(names, 1))
    return f"local {name} = {{{entries}}}\n"


def _libraries(
    name: str, includes: tuple[str, ...], seen: list[str], chain: tuple[str, ...]
) -> None:
    """Depth-first, dependencies first, each library once."""
    for library in includes:
        if library in chain:
            raise LuaScriptError(f"{name}.lua: include cycle {' -> '.join((*chain, library))}")
        if library in seen:
            continue
        text = _read(f"lib/{library}.lua")
        _libraries(f"lib/{library}", parse_header(library, text).includes, seen, (*chain, library))
        seen.append(library)


@dataclass(frozen=True)
class LuaScript:
    """One script, assembled once per process; called with EVALSHA (loaded on first miss)."""

    name: str
    keys: tuple[str, ...]
    args: tuple[str, ...]
    source: str
    sha: str

    def __call__(
        self,
        client: redis.Redis,
        *,
        keys: Mapping[str, str | bytes],
        args: Mapping[str, str | bytes | int | float],
    ) -> Any:
        ordered = [*self._order("KEYS", self.keys, keys), *self._order("ARGV", self.args, args)]
        try:
            return client.evalsha(self.sha, len(self.keys), *ordered)
        except redis.exceptions.NoScriptError:  # a restarted or different server
            client.script_load(self.source)
            return client.evalsha(self.sha, len(self.keys), *ordered)

    def _order(self, what: str, declared: tuple[str, ...], given: Mapping[str, Any]) -> list[Any]:
        missing = [n for n in declared if n not in given]
        unknown = sorted(set(given) - set(declared))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(unknown)}")
            raise ScriptArgumentError(
                f"{self.name}.lua {what}: {'; '.join(parts)} (declared: {', '.join(declared)})"
            )
        values = [given[n] for n in declared]
        for field, value in zip(declared, values, strict=True):
            if value is None or isinstance(value, bool):
                raise ScriptArgumentError(
                    f"{self.name}.lua {what} {field!r} is {value!r}: pass a string or a number "
                    "('' for none)"
                )
        return values


@functools.cache
def load(name: str) -> LuaScript:
    """The script in workers/lua/NAME.lua with its prelude and libraries; read once."""
    text = _read(f"{name}.lua")
    header = parse_header(name, text)
    libraries: list[str] = []
    _libraries(name, header.includes, libraries, ())
    parts = [
        f"-- {name}.lua, assembled by workers/scripts.py\n",
        status_prelude(),
        _table("KEY", "KEYS", header.keys),
        _table("ARG", "ARGV", header.args),
        *(_read(f"lib/{library}.lua") for library in libraries),
        text,
    ]
    source = "".join(part if part.endswith("\n") else part + "\n" for part in parts)
    sha = hashlib.sha1(source.encode()).hexdigest()
    return LuaScript(name, header.keys, header.args, source, sha)
