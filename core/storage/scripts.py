"""The Lua scripts of :mod:`core.storage`, read from ``lua/*.lua`` and registered once per client.

Each ``.lua`` file documents its KEYS and ARGV at its top; one Python function per script
(``*_call`` in the module that runs it) builds them, so the positional layout lives in one
place. A script holding the line ``-- include: note_changes`` gets ``lua/note_changes.lua``
prepended.

Every multi-step batch of commands and script calls goes through :func:`batch` and :func:`run`,
which work the same on one Redis and on a Redis Cluster: a script call goes as EVALSHA, with
no check before it that the script is loaded (:class:`Batch`; on a cluster see
:class:`~core.storage.cluster_batch.ClusterBatch`, which also says what the cluster changes).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, NamedTuple, cast

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import Connection
from redis.exceptions import NoScriptError, ResponseError
from redis.typing import EncodableT

from core.storage.cluster_batch import ClusterBatch

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


# The scripts that a batch may run a second time when it cannot know whether the first run
# happened (its connection lost after the call was written): running one twice leaves what
# running it once does. apply_events counts each event once by its request's seen-marker;
# serve_slate, withdraw_post and claim_post_id write the same values again; record_shown
# writes the same entries (a replay is a no-op); prune_expired finds nothing more to
# forget. count_slate adds to its counts and is not among them: such a call's error is the
# batch's (the caller degrades), never a second count.
REPLAYABLE = frozenset(
    {"apply_events", "claim_post_id", "prune_expired", "record_shown", "serve_slate",
     "withdraw_post"}
)  # fmt: skip
_REPLAYABLE_SHAS = frozenset(hashlib.sha1(source(name).encode()).hexdigest() for name in REPLAYABLE)


def load_on_connect(connection: Connection) -> None:
    """A ``redis_connect_func`` for a client of one Redis: the connection's usual hand-shake,
    then every script loaded (one round trip more per new connection), so that batches on a
    Redis that restarted, and so lost its scripts, find them on their new connections."""
    connection.on_connect()
    scripts = [("SCRIPT", "LOAD", source(name)) for name in SCRIPTS]
    connection.send_packed_command(connection.pack_commands(scripts))
    for _ in scripts:
        connection.read_response()


def batch(client: redis.Redis) -> redis.client.Pipeline:
    """A non-transactional pipeline for commands and script calls (:func:`run`): its
    ``execute()`` returns every reply in the order queued, and raises the first error.

    On one Redis, a :class:`Batch` (one round trip); on a Redis Cluster, a
    :class:`~core.storage.cluster_batch.ClusterBatch`.
    """
    if isinstance(client, RedisCluster):
        # Typed as a pipeline so that call sites stay as they are; it answers what they use.
        return cast(redis.client.Pipeline, ClusterBatch(client))
    return Batch(client)


def run(script: Script, call: ScriptCall, pipe: redis.client.Pipeline) -> None:
    """Queue one call of ``script`` on ``pipe`` (a pipeline of :func:`batch`)."""
    if isinstance(pipe, ClusterBatch):
        pipe.run_script(script, call.keys, call.args, script.sha in _REPLAYABLE_SHAS)
    elif isinstance(pipe, Batch):
        pipe.run_script(script, call)
    else:
        script(keys=call.keys, args=call.args, client=pipe)


class Batch(redis.client.Pipeline):
    """A non-transactional pipeline on one Redis whose script calls go as EVALSHA with no
    ``SCRIPT EXISTS`` before them (redis-py's own pipeline asks every time): one round trip.

    A call that finds its script missing (NOSCRIPT) did not run: the scripts are loaded and
    those calls run again, in the order queued, in a second round trip, after the rest of the
    batch. That is the order of a batch only when the scripts were flushed while its
    connection lived (``SCRIPT FLUSH``): a Redis that restarted gives new connections, which
    load every script first with :func:`load_on_connect` (as the services' clients do).
    """

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, False, None)
        self._redis = client
        self._calls: dict[int, tuple[Script, ScriptCall]] = {}

    def run_script(self, script: Script, call: ScriptCall) -> None:
        self._calls[len(self.command_stack)] = (script, call)
        self.execute_command("EVALSHA", script.sha, len(call.keys), *call.keys, *call.args)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        calls, self._calls = self._calls, {}
        replies = super().execute(raise_on_error=False)
        missing = [i for i in calls if isinstance(replies[i], NoScriptError)]
        if missing:
            again = self._redis.pipeline(transaction=False)
            for script in {calls[i][0] for i in missing}:
                again.script_load(script.script)
            for i in missing:
                script, call = calls[i]
                again.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
            for i, reply in zip(missing, again.execute(raise_on_error=False)[-len(missing):],
                                strict=True):  # fmt: skip
                replies[i] = reply
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies
