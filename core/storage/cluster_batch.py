"""A batch of commands and script calls on a Redis Cluster (:class:`ClusterBatch`).

Script calls go as EVALSHA on one plain pipeline per node, routed by the slot of their first
key (every script's keys share one slot: ``tests/test_storage_layout.py``), rather than
through redis-py's cluster pipeline, which sends EVAL with the whole text after a
``COMMAND GETKEYS`` round trip to find each call's slot, and costs several times the CPU.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import redis
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.connection import Connection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from redis.typing import EncodableT

# Replies by which a node says that it did not run the call (MOVED is an AskError).
NOT_RUN = (AskError, TryAgainError, ClusterDownError, NoScriptError)


class _Call(NamedTuple):
    script: Script
    keys: list[str]
    args: list[EncodableT]
    replayable: bool


class _Sent(NamedTuple):
    """One node's share of a step of script calls, written on one connection."""

    node: redis.Redis
    connection: Connection
    positions: list[int]


class ClusterBatch:
    """A batch on a Redis Cluster, executed in steps, in the order queued: each run of
    commands is one cluster pipeline, each run of script calls one pipeline on each node it
    touches (those nodes written to, then read, in turn), and TIME is a command of its own.

    So everything queued before a script call has completed when it runs, and it has
    completed before what is queued after it: the order a single pipeline gives between
    steps, at the cost of a round trip per step. ``execute()`` returns every reply in the
    order queued and raises the first error; a step that fails ends the batch.

    A script call is sent as EVALSHA to the master of its slot in the client's slot map. A
    call that its node did not run (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, or NOSCRIPT from a
    replica just promoted, which is then sent the script) is sent again as EVAL through the
    cluster client, which follows redirections and refreshes its slot map. A call that may
    have run, its connection lost after it was written, is sent again only when it is
    replayable (running it twice changes nothing more than once); otherwise its error is
    the batch's, never a second run: see :data:`core.storage.scripts.REPLAYABLE`.
    """

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._steps: list[ClusterPipeline | list[_Call] | None] = []

    def _commands(self) -> ClusterPipeline:
        if not self._steps or not isinstance(self._steps[-1], ClusterPipeline):
            self._steps.append(self.client.pipeline())
        step = self._steps[-1]
        assert isinstance(step, ClusterPipeline)
        return step

    def __getattr__(self, name: str) -> Any:
        """Any other command, queued in the current run of commands."""
        return getattr(self._commands(), name)

    def __len__(self) -> int:
        """How many commands are queued (each script call and TIME one), as a pipeline's."""
        return sum(1 if step is None else len(step) for step in self._steps)

    def time(self) -> ClusterBatch:
        self._steps.append(None)
        return self

    def run_script(
        self, script: Script, keys: list[str], args: list[EncodableT], replayable: bool
    ) -> None:
        """Queue one call of ``script``; ``replayable`` when running it twice is harmless."""
        if not self._steps or not isinstance(self._steps[-1], list):
            self._steps.append([])
        step = self._steps[-1]
        assert isinstance(step, list)
        step.append(_Call(script, keys, args, replayable))

    def execute(self) -> list[Any]:
        steps, self._steps = self._steps, []
        replies: list[Any] = []
        for step in steps:
            if step is None:
                replies.append(self.client.time())
            elif isinstance(step, list):
                replies += self._run_scripts(step)
            else:
                replies += step.execute()
        return replies

    def _run_scripts(self, calls: list[_Call]) -> list[Any]:
        replies: list[Any] = [None] * len(calls)
        groups, again = self._by_node(calls)
        sent: list[_Sent] = []
        try:
            for node, positions in groups.values():
                written = self._write(node, positions, calls)
                if isinstance(written, _Sent):
                    sent.append(written)
                elif written is None:
                    again += positions  # no connection: nothing was sent
                else:
                    again += _lost(positions, written, calls, replies)
            while sent:
                again += self._read(sent.pop(0), calls, replies)
        finally:
            for left in sent:  # written and never read: the connection is unusable
                left.connection.disconnect()
                left.node.connection_pool.release(left.connection)
        self._load_missing(calls, replies)
        for i in sorted(again):
            replies[i] = self._again(calls[i], replies[i])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _by_node(
        self, calls: list[_Call]
    ) -> tuple[dict[str, tuple[redis.Redis, list[int]]], list[int]]:
        """The positions of the calls per node of their slot, and those of no known node."""
        groups: dict[str, tuple[redis.Redis, list[int]]] = {}
        unknown = []
        for i, call in enumerate(calls):
            try:
                node: ClusterNode = self.client.nodes_manager.get_node_from_slot(
                    self.client.keyslot(call.keys[0])
                )
            except RedisClusterException:  # a slot no node serves, in a failover
                unknown.append(i)
                continue
            if node.name not in groups:
                groups[node.name] = (self.client.get_redis_connection(node), [])
            groups[node.name][1].append(i)
        return groups, unknown

    @staticmethod
    def _write(
        node: redis.Redis, positions: list[int], calls: list[_Call]
    ) -> _Sent | ConnectionError | TimeoutError | None:
        """Write the calls at ``positions`` as EVALSHA on one connection of ``node``: None
        when no connection could be made (nothing was sent), the error when writing failed
        (some may have been sent)."""
        pool = node.connection_pool
        try:
            connection = pool.get_connection()
        except (ConnectionError, TimeoutError):
            return None
        commands = [
            ("EVALSHA", calls[i].script.sha, len(calls[i].keys), *calls[i].keys, *calls[i].args)
            for i in positions
        ]
        try:
            connection.send_packed_command(connection.pack_commands(commands))
        except BaseException as error:
            connection.disconnect()
            pool.release(connection)
            if isinstance(error, (ConnectionError, TimeoutError)):
                return error
            raise
        return _Sent(node, connection, positions)

    @staticmethod
    def _read(sent: _Sent, calls: list[_Call], replies: list[Any]) -> list[int]:
        """Read the replies of ``sent`` into ``replies``; the positions to send again."""
        try:
            for i in sent.positions:
                try:
                    replies[i] = sent.node.parse_response(sent.connection, "EVALSHA")
                except ResponseError as error:
                    replies[i] = error
        except (ConnectionError, TimeoutError) as error:
            sent.connection.disconnect()
            return _lost([i for i in sent.positions if replies[i] is None], error, calls, replies)
        except BaseException:
            sent.connection.disconnect()
            raise
        finally:
            sent.node.connection_pool.release(sent.connection)
        return [i for i in sent.positions if isinstance(replies[i], NOT_RUN)]

    def _load_missing(self, calls: list[_Call], replies: list[Any]) -> None:
        """Send the scripts that a node did not have to the master of their slot, so that
        later batches find them (the calls themselves go again as EVAL)."""
        missing = {
            (calls[i].script, self.client.keyslot(calls[i].keys[0]))
            for i, reply in enumerate(replies)
            if isinstance(reply, NoScriptError)
        }
        for script, slot in missing:
            try:
                node = self.client.nodes_manager.get_node_from_slot(slot)
                self.client.get_redis_connection(node).script_load(script.script)
            except (redis.RedisError, RedisClusterException):
                pass  # the calls go as EVAL all the same; the next batch that misses loads it

    def _again(self, call: _Call, first: Any) -> Any:
        """Run ``call`` again as EVAL through the cluster client (which follows MOVED and ASK,
        waits out TRYAGAIN and refreshes its slot map); its reply, or its error.

        A replayable call gets the client's retries; one that is not is sent once, to the
        master of its slot after a refresh when its first try found no node or connection,
        and its error is kept when it may have run."""
        if isinstance(first, (ConnectionError, TimeoutError)) and not call.replayable:
            return first
        if isinstance(first, MovedError):  # the slot's master is known: go there at once
            self.client.nodes_manager.move_slot(first)
        command = ("EVAL", call.script.script, len(call.keys), *call.keys, *call.args)
        try:
            if call.replayable:
                return self.client.execute_command(*command)
            if not isinstance(first, NOT_RUN):
                self.client.nodes_manager.initialize()
            node = self.client.nodes_manager.get_node_from_slot(self.client.keyslot(call.keys[0]))
            return self.client.execute_command(*command, target_nodes=node)
        except (redis.RedisError, RedisClusterException) as error:
            return error


def _lost(
    positions: list[int], error: Exception, calls: list[_Call], replies: list[Any]
) -> list[int]:
    """Note ``error`` as the reply of calls whose connection was lost after they may have been
    written (each may or may not have run); those of them to send again: the replayable."""
    for i in positions:
        replies[i] = error
    return [i for i in positions if calls[i].replayable]
