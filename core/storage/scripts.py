"""The Lua scripts of :mod:`core.storage`, read from ``lua/*.lua`` and registered once per client.

Each ``.lua`` file documents its KEYS and ARGV at its top; one Python function per script
(``*_call`` in the module that runs it) builds them, so the positional layout lives in one
place. A script holding the line ``-- include: note_changes`` gets ``lua/note_changes.lua``
prepended.

Every multi-step batch of commands and script calls goes through :func:`batch` and :func:`run`,
which work the same on one Redis and on a Redis Cluster (whose pipelines refuse EVALSHA and
TIME): see :class:`ClusterBatch` for what the cluster changes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple, cast

import redis
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.typing import EncodableT

LUA_DIR = Path(__file__).parent / "lua"
SCRIPTS = (
    "apply_events",
    "claim_post_id",
    "count_slate",
    "prune_expired",
    "put_post",
    "record_shown",
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
        self.record_shown = client.register_script(source("record_shown"))
        self.claim_post_id = client.register_script(source("claim_post_id"))
        self.put_post = client.register_script(source("put_post"))
        self.withdraw_post = client.register_script(source("withdraw_post"))
        self.start_experiment = client.register_script(source("start_experiment"))
        self.stop_experiment = client.register_script(source("stop_experiment"))
        self.count_slate = client.register_script(source("count_slate"))


def batch(client: redis.Redis) -> redis.client.Pipeline:
    """A non-transactional pipeline for commands and script calls (:func:`run`): its
    ``execute()`` returns every reply in the order queued, and raises the first error.

    On one Redis, one pipeline (one round trip); on a Redis Cluster, a :class:`ClusterBatch`.
    """
    if isinstance(client, RedisCluster):
        # Typed as a pipeline so that call sites stay as they are; it answers what they use.
        return cast(redis.client.Pipeline, ClusterBatch(client))
    return client.pipeline(transaction=False)


def run(script: Script, call: ScriptCall, pipe: redis.client.Pipeline) -> None:
    """Queue one call of ``script`` on ``pipe`` (a pipeline of :func:`batch`)."""
    if isinstance(pipe, ClusterBatch):
        pipe.eval_script(script, call)
    else:
        script(keys=call.keys, args=call.args, client=pipe)


class ClusterBatch:
    """A batch on a Redis Cluster, executed in steps, in the order queued: each run of
    commands, and each run of script calls, is one cluster pipeline (one round trip to each
    node it touches, those nodes in parallel), and TIME is a command of its own.

    So everything queued before a script call has completed when it runs, and it has
    completed before what is queued after it: the order a single pipeline gives between
    steps, at the cost of a round trip per step. Script calls are sent as EVAL with their
    text (cluster pipelines refuse EVALSHA): a node that never saw the script, such as a
    replica just promoted, still runs it. TIME reads one node's clock.
    """

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._steps: list[tuple[str, ClusterPipeline | None]] = []

    def _pipe(self, kind: str) -> ClusterPipeline:
        if not self._steps or self._steps[-1][0] != kind:
            self._steps.append((kind, self.client.pipeline()))
        pipe = self._steps[-1][1]
        assert pipe is not None  # only TIME steps have none
        return pipe

    def __getattr__(self, name: str) -> Any:
        """Any other command, queued in the current run of commands."""
        return getattr(self._pipe("commands"), name)

    def __len__(self) -> int:
        """How many commands are queued (each script call and TIME one), as a pipeline's."""
        return sum(1 if pipe is None else len(pipe) for _, pipe in self._steps)

    def time(self) -> ClusterBatch:
        self._steps.append(("time", None))
        return self

    def eval_script(self, script: Script, call: ScriptCall) -> None:
        self._pipe("scripts").execute_command("EVAL", script.script, len(call.keys),
                                              *call.keys, *call.args)  # fmt: skip

    def execute(self) -> list[Any]:
        replies: list[Any] = []
        for _, pipe in self._steps:
            replies += [self.client.time()] if pipe is None else pipe.execute()
        self._steps.clear()
        return replies
