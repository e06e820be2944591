"""Every atomic multi-key step of the storage layer stays in one Redis Cluster hash slot.

A Redis Cluster refuses a transaction (MULTI/EXEC), a script call (EVAL/EVALSHA) or a
command whose keys span slots (CROSSSLOT). The storage layer is run here against a real
Redis through a connection that records every command it sends; the server itself names
each command's keys (``COMMAND GETKEYS``), and each transaction, script call and multi-key
command must keep them in one slot. ``tests/test_storage_layout.py`` checks the script
builders for every kind of id; this checks what is actually sent, transactions included,
and that no transaction is written where this test does not run it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from core.storage import Served, SlateArm, Storage, new_request_id
from core.storage.experiments import canonical
from core.storage.scripts import SCRIPTS, source
from core.storage.snapshot_reads import VariantRead

ROOT = Path(__file__).parent.parent
Command = tuple[Any, ...]
# Where the code opens a transaction: a test of this module must run each (see exercise()).
TRANSACTION = re.compile(r"transaction=True|\"MULTI\"")
TRANSACTION_SITES = {
    "core/storage/drain_cursors.py": 1,  # advance: WATCH, then MULTI
    "core/storage/journal.py": 5,  # add (with and without WAIT), forget, adopt_legacy (2)
}


class RecordingConnection(redis.Connection):
    """A connection that appends every command it sends, with its own id, to ``sent``."""

    sent: list[tuple[int, Command]]

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        self.sent.append((id(self), args))
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> list[bytes | memoryview]:
        commands = list(commands)
        self.sent.extend((id(self), tuple(c)) for c in commands)
        return super().pack_commands(commands)


@pytest.fixture
def recorded(redis_url: str) -> Iterator[tuple[redis.Redis, list[tuple[int, Command]]]]:
    sent: list[tuple[int, Command]] = []
    connection_class = type("Recording", (RecordingConnection,), {"sent": sent})
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=connection_class)
    client = redis.Redis(connection_pool=pool)
    yield client, sent
    client.close()


def steps(sent: list[tuple[int, Command]]) -> Iterator[list[Command]]:
    """The atomic steps sent, each as its commands: a transaction (from MULTI to EXEC, on one
    connection) as one step, every other command as a step of its own."""
    open_: dict[int, list[Command]] = defaultdict(list)
    in_multi: set[int] = set()
    for conn, args in sent:
        name = command_name(args)
        if name == "MULTI":
            in_multi.add(conn)
        elif name in ("EXEC", "DISCARD") and conn in in_multi:
            in_multi.discard(conn)
            yield open_.pop(conn, [])
        elif conn in in_multi:
            open_[conn].append(args)
        else:
            yield [args]


def command_name(args: Command) -> str:
    name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    return name.split()[0].upper()  # redis-py may send "SCRIPT LOAD" as one argument


def keys_of(server: redis.Redis, args: Command) -> list[bytes]:
    """The keys of one command, as the server reads them (none for a keyless one)."""
    try:
        found = server.command_getkeys(*args)
    except redis.ResponseError:  # "the command has no key arguments"
        return []
    return [k if isinstance(k, bytes) else str(k).encode() for k in found]


def exercise(storage: Storage) -> None:
    """Every storage operation with more than one key, on one Redis."""
    now, forums = time.time(), ["maths", "sports", "music"]
    for forum in forums:
        for post in ("a", "b"):
            storage.catalogue.register(f"{forum}-{post}", forum, now, 60)
    storage.catalogue.put_post("maths-c", "maths", now, now + 3600, 60)
    storage.catalogue.delete_post("maths-c", now)
    storage.catalogue.get_forums(forums, now)
    assert storage.experiments.start("x1", canonical({"variants": {"a": {}}}), now)[0] == "created"
    arm = SlateArm("x1", "a", 3)
    rids = []
    for user in ("u1", "u2", "u3"):
        rid = new_request_id(user)
        served = Served(rid, user, "explore", {f"{f}-a": f for f in forums}, "x1", "a")
        storage.serving.serve(served, 600, {"request_id": rid})
        rids.append(rid)
    storage.serving.remember_clicks([("u1", "sports-b")], now, 600)
    storage.shown.remember_impressions(
        [(u, "maths-a", r) for u, r in zip(("u1", "u2", "u3"), rids, strict=True)], now, (3, 600)
    )
    storage.shown.remember_clicks([("u2", "maths-a")], now, now, (3, 600), reclick=600)
    assert storage.serving.to_hide("u1", now - 60, now - 60, now).clicked == ["sports-b"]
    storage.serving.lookup(rids)
    events = [(r, f"{f}-a", f) for r in rids for f in forums]
    storage.counting.apply_events("c", events, 600, {r: arm for r in rids})
    reads = storage.snapshots.read_forums(forums, now, VariantRead("x1", ("a",)))
    storage.snapshots.read_changes({r.forum_id: r.cursor for r in reads}, now)
    storage.experiment_counts.tallies("x1", ["a"])
    storage.experiment_counts.members("x1", ["a"])
    storage.experiments.stop("x1", now + 1, "a", None)
    storage.counting.prune_expired(now + 10**6)
    storage.decisions.read_decisions("-", "+", 100)
    storage.decisions.outcomes_kept_since()
    exercise_journal(storage, now)
    lock = storage.drains.lock(5)
    assert lock.acquire()
    storage.drains.advance("decisions", None, 1000, lock)
    lock.release()


def exercise_journal(storage: Storage, now: float) -> None:
    for replicas in (0, 1):  # one Redis has no replica: WAIT comes back at once
        storage.journal.replicas = replicas
        storage.journal.add(f"batch{replicas}", "[]", now)
    pipe = storage.client.pipeline(transaction=True)  # a batch of the unsharded journal
    pipe.hset(storage.keys.legacy_pending, "old", "[]").zadd(
        storage.keys.legacy_pending_since, {"old": now}
    )
    pipe.execute()
    storage.journal.oldest_since()
    storage.journal.adopt_legacy(10)
    storage.journal.overdue(now + 1, 10)
    storage.journal.requeued("batch0", now)
    assert storage.journal.since("batch0") == now
    lock = storage.journal.sweep_lock(5)
    assert lock.acquire()
    lock.release()
    for batch_id in ("batch0", "batch1", "old"):
        storage.journal.forget(batch_id)
    assert storage.journal.is_empty()


def test_every_transaction_script_call_and_multi_key_command_stays_in_one_slot(
    recorded: tuple[redis.Redis, list[tuple[int, Command]]], rclient: redis.Redis
) -> None:
    client, sent = recorded
    exercise(Storage(client, "pb", decision_log_maxlen=100, forum_window=20))
    seen: dict[str, int] = defaultdict(int)
    crossing = []
    for step in steps(sent):
        keys = [k for args in step for k in keys_of(rclient, args)]
        kind = "MULTI" if len(step) != 1 else command_name(step[0])
        seen[kind] += 1
        if len({key_slot(k) for k in keys}) > 1:
            crossing.append((kind, sorted(set(keys))))
    assert not crossing, f"multi-key steps across hash slots: {crossing}"
    # What was checked: every script was called, and transactions ran.
    called = {str(args[1]) for _, args in sent if command_name(args) == "EVALSHA"}
    assert {hashlib.sha1(source(name).encode()).hexdigest() for name in SCRIPTS} <= called
    assert seen["MULTI"] >= sum(TRANSACTION_SITES.values())


def test_every_transaction_in_the_code_is_one_this_module_runs() -> None:
    """A new MULTI step must be added to ``exercise`` (and to ``TRANSACTION_SITES``), so the
    check above covers it."""
    found = {}
    for package in ("core", "app", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if count := len(TRANSACTION.findall(path.read_text())):
                found[str(path.relative_to(ROOT))] = count
    assert found == TRANSACTION_SITES
