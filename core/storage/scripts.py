"""The Lua scripts of :mod:`core.storage`, read from ``lua/*.lua`` and registered once per client.

Each ``.lua`` file documents its KEYS and ARGV at its top; one Python function per script
(``*_call`` in the module that runs it) builds them, so the positional layout lives in one
place. A script holding the line ``-- include: note_changes`` gets ``lua/note_changes.lua``
prepended.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import redis
from redis.commands.core import Script
from redis.typing import EncodableT

LUA_DIR = Path(__file__).parent / "lua"
SCRIPTS = (
    "apply_events",
    "claim_post_id",
    "count_slate",
    "prune_expired",
    "put_post",
    "serve_slate",
    "start_experiment",
    "stop_experiment",
    "withdraw_post",
)


class ScriptCall(NamedTuple):
    """The KEYS and ARGV of one call of a script."""

    keys: list[str]
    args: list[EncodableT]


@functools.cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``, with the helpers it includes prepended."""
    text = (LUA_DIR / f"{name}.lua").read_text()
    includes = [
        line.removeprefix("-- include:").strip()
        for line in text.splitlines()
        if line.startswith("-- include:")
    ]
    return "".join(source(helper) + "\n" for helper in includes) + text


class Scripts:
    """Every script registered on one client (sent by EVALSHA, loaded on first use)."""

    def __init__(self, client: redis.Redis) -> None:
        self.apply_events = client.register_script(source("apply_events"))
        self.prune_expired = client.register_script(source("prune_expired"))
        self.serve_slate = client.register_script(source("serve_slate"))
        self.claim_post_id = client.register_script(source("claim_post_id"))
        self.put_post = client.register_script(source("put_post"))
        self.withdraw_post = client.register_script(source("withdraw_post"))
        self.start_experiment = client.register_script(source("start_experiment"))
        self.stop_experiment = client.register_script(source("stop_experiment"))
        self.count_slate = client.register_script(source("count_slate"))


def run(script: Script, call: ScriptCall, pipe: redis.client.Pipeline) -> None:
    """Queue one call of ``script`` on ``pipe``."""
    script(keys=call.keys, args=call.args, client=pipe)
