"""The Lua loader (workers/scripts.py): scripts are called by the names their headers declare,
the TaskStatus prelude is the enum's, and no script may spell a status of its own."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

import pytest
import redis

from messages.status import TaskStatus
from tests.private_redis import private_redis
from workers import scripts
from workers.scripts import LuaScriptError, ScriptArgumentError, parse_header

SETTLE = scripts.load("settle")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    yield from private_redis(tmp_path_factory)


def lua_files() -> list[str]:
    folder = resources.files("workers") / "lua"
    return sorted(p.name.removesuffix(".lua") for p in folder.iterdir() if p.name.endswith(".lua"))


def settle_args(**changes: object) -> dict[str, object]:
    args = {
        "field": "m:1",
        "tokens": 1,
        "micro_usd": 1,
        "mode": "settle",
        "ttl": 60,
        "token": "s1",
        **changes,
    }
    return {name: value for name, value in args.items() if value is not DROP}


DROP = object()


@pytest.mark.parametrize("name", lua_files())
def test_every_script_loads_with_a_header_naming_its_keys_and_arguments(name: str) -> None:
    script = scripts.load(name)
    assert script.keys, f"{name}.lua declares no KEYS"
    assert script.args, f"{name}.lua declares no ARGV"
    assert script.source.startswith(f"-- {name}.lua")


def test_a_missing_or_misspelled_argument_fails_before_reaching_redis(
    client: redis.Redis,
) -> None:
    budget = {"budget": "chorus:test:budget"}
    with pytest.raises(ScriptArgumentError, match=r"settle\.lua ARGV: missing ttl"):
        SETTLE(client, keys=budget, args=settle_args(ttl=DROP))
    with pytest.raises(ScriptArgumentError, match="missing mode; unknown mdoe"):
        SETTLE(client, keys=budget, args=settle_args(mdoe="settle", mode=DROP))
    with pytest.raises(ScriptArgumentError, match=r"KEYS: missing budget; unknown bugdet"):
        SETTLE(client, keys={"bugdet": "x"}, args=settle_args())
    assert not client.exists("chorus:test:budget")


def test_none_is_refused_rather_than_sent_as_a_string(client: redis.Redis) -> None:
    with pytest.raises(ScriptArgumentError, match="'field' is None"):
        SETTLE(client, keys={"budget": "b"}, args=settle_args(field=None))


def test_a_script_the_server_forgot_is_loaded_again(client: redis.Redis) -> None:
    client.script_flush()
    assert SETTLE(client, keys={"budget": "b"}, args=settle_args()) == 1


def test_the_status_prelude_is_the_enum(client: redis.Redis) -> None:
    names = [status.name for status in TaskStatus]
    body = "return {" + ", ".join(f"TaskStatus.{name}" for name in names) + "}"
    answer = client.eval(scripts.status_prelude() + body, 0)
    assert [value.decode() for value in answer] == [status.value for status in TaskStatus]


def test_a_status_spelled_in_lua_is_refused() -> None:
    with pytest.raises(LuaScriptError, match=r"x\.lua:2 spells the status 'done'"):
        scripts._refuse_status_literals("x.lua", "-- 'done' in a comment is fine\nreturn 'done'")
    scripts._refuse_status_literals("x.lua", "return 'done:' .. 'running_count'")


def test_the_header_names_keys_and_arguments_in_order_and_ends_at_prose() -> None:
    header = parse_header(
        "demo",
        "-- demo: what it does\n--\n-- KEYS\n--   task   the task hash\n"
        "--          continued\n--   board\n-- ARGV\n--   now  ISO time\n--\n"
        "-- Returns nothing.\n--   {'handled', record}\n--@include audit\n\nreturn 1\n",
    )
    assert header.keys == ("task", "board")
    assert header.args == ("now",)
    assert header.includes == ("audit",)


def test_a_library_is_spliced_once_ahead_of_the_script() -> None:
    source = scripts.load("record_step").source
    assert source.count("local function audit(") == 1  # included by three of its libraries
    assert source.index("local function audit(") < source.index("local function dead_letter(")
    assert source.index("local KEY = {board = KEYS[1]") < source.index("local function audit(")
