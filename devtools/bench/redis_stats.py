"""What the statistics store did between two moments, summed over its masters: commands
(``INFO commandstats``, the commands that scripts run included), network bytes (``INFO
stats``), CPU (``INFO cpu``) and memory (``INFO memory``); and the memory of sampled keys."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import redis

# The benchmark's own look at a cluster's slot map, not the service's work.
OWN_COMMANDS = frozenset({"cluster"})


@dataclass(frozen=True)
class Counters:
    """Totals of the masters at one moment, or (after ``-``) what happened in between."""

    commands: float  # floats: per slate or per event they are fractions
    calls: dict[str, float]  # command -> calls
    usec: dict[str, float]  # command -> microseconds Redis spent in it
    net_in: float
    net_out: float
    cpu_seconds: float
    used_memory: float
    own_info: int = 0  # INFO calls this snapshot made, which later snapshots count

    def __sub__(self, other: Counters) -> Counters:
        names = self.calls.keys() | other.calls.keys()
        calls = {k: self.calls.get(k, 0) - other.calls.get(k, 0) for k in names}
        if "info" in calls:
            calls["info"] -= other.own_info
        usec = {k: self.usec.get(k, 0) - other.usec.get(k, 0) for k in names}
        return Counters(
            commands=self.commands - other.commands - other.own_info,
            calls={k: v for k, v in calls.items() if v},
            usec={k: usec[k] for k in calls if calls[k]},
            net_in=self.net_in - other.net_in,
            net_out=self.net_out - other.net_out,
            cpu_seconds=self.cpu_seconds - other.cpu_seconds,
            used_memory=self.used_memory - other.used_memory,
        )  # fmt: skip

    def __add__(self, other: Counters) -> Counters:
        return self - other.scaled(-1)

    def scaled(self, factor: float) -> Counters:
        """Every count times ``factor`` (background activity over another duration)."""
        return Counters(
            commands=self.commands * factor,
            calls={k: v * factor for k, v in self.calls.items()},
            usec={k: v * factor for k, v in self.usec.items()},
            net_in=self.net_in * factor, net_out=self.net_out * factor,
            cpu_seconds=self.cpu_seconds * factor, used_memory=self.used_memory * factor,
        )  # fmt: skip


def counters(masters: list[redis.Redis]) -> Counters:
    """The masters' counters now, summed: one ``INFO all`` each, which the difference from
    a later snapshot leaves out (the service's own INFO calls stay in)."""
    calls: dict[str, float] = {}
    usec: dict[str, float] = {}
    net_in = net_out = memory = 0
    cpu = 0.0
    for client in masters:
        info = client.info("all")
        for name, stats in info.items():
            command = name.removeprefix("cmdstat_").lower()
            if name.startswith("cmdstat_") and command.split("|")[0] not in OWN_COMMANDS:
                calls[command] = calls.get(command, 0) + int(stats["calls"])
                usec[command] = usec.get(command, 0) + int(stats["usec"])
        net_in += int(info["total_net_input_bytes"])
        net_out += int(info["total_net_output_bytes"])
        cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        memory += int(info["used_memory"])
    return Counters(sum(calls.values()), calls, usec, net_in, net_out, cpu, memory, len(masters))


@dataclass(frozen=True)
class KeySample:
    """Keys matching a pattern on every master: how many, and their mean size."""

    pattern: str
    keys: int
    mean_bytes: float
    mean_members: float  # hash fields, set or zset members, stream entries


def sample_keys(
    masters: list[redis.Redis], pattern: str, skip: str = "", sample: int = 200
) -> KeySample:
    """Count the keys matching ``pattern`` (but not holding ``skip``) and size up to
    ``sample`` of them (``MEMORY USAGE ... SAMPLES 0``: every element)."""
    found = [
        [key for key in client.scan_iter(match=pattern, count=1000) if not skip or skip not in key]
        for client in masters
    ]
    total = sum(len(keys) for keys in found)
    sizes: list[tuple[int, int]] = []
    per_master = max(1, sample // max(1, len(masters)))
    for client, keys in zip(masters, found, strict=True):
        for key in itertools.islice(keys, per_master):
            size = client.memory_usage(key, samples=0)
            if size is not None:
                sizes.append((int(size), _members(client, key)))
    if not sizes:
        return KeySample(pattern, total, 0.0, 0.0)
    return KeySample(pattern, total, sum(s for s, _ in sizes) / len(sizes),
                     sum(m for _, m in sizes) / len(sizes))  # fmt: skip


def _members(client: redis.Redis, key: str) -> int:
    kind = client.type(key)
    length = {"hash": client.hlen, "set": client.scard, "zset": client.zcard,
              "stream": client.xlen, "list": client.llen}.get(str(kind))  # fmt: skip
    return int(length(key)) if length else 1
