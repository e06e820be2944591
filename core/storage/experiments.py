"""Experiments: their definitions, the one that runs, the promoted policy, and their history.

Every key is under the hash tag ``{experiments}``, so each state change is one atomic script
in one slot (``lua/start_experiment.lua``, ``lua/stop_experiment.lua``): two starts racing
cannot both run, and a stop racing a start sees it either wholly or not at all. The web
processes read what serves (:meth:`Experiments.serving`) with one command per snapshot
refresh. Definitions are stored as the caller gives them, canonical JSON text: this layer
does not know policies, only that equal definitions are equal strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from core.storage.keys import Keys
from core.storage.records import text
from core.storage.scripts import ScriptCall, Scripts, batch

HISTORY_KEEP = 100

StartResult = Literal["created", "same", "changed", "stopped", "busy"]
StopResult = Literal["stopped", "already_stopped", "unknown"]


def canonical(value: Any) -> str:
    """``value`` as canonical JSON: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class ServingState:
    """What serves now: the running experiment (id and definition) or none, and the promoted
    policy (``{"experiment", "variant", "policy", "params"}``) or none. ``version`` grows with
    every change, so a reader rebuilds its policies only when it moved."""

    version: int
    experiment: str | None
    definition: dict[str, Any] | None
    promoted: dict[str, Any] | None


@dataclass(frozen=True)
class ExperimentRecord:
    """One experiment as stored: status ``running`` or ``stopped``, times in unix seconds,
    and the name of the variant promoted when it stopped (None: none)."""

    experiment_id: str
    definition: dict[str, Any]
    status: str
    started_at: float
    stopped_at: float | None
    promoted: str | None


def start_experiment_call(
    keys: Keys, experiment_id: str, definition: str, now: float
) -> ScriptCall:
    """KEYS/ARGV of ``lua/start_experiment.lua``."""
    return ScriptCall(
        [keys.experiment_serving, keys.experiment(experiment_id), keys.experiment_history,
         keys.experiment_ids],
        [experiment_id, definition, now, HISTORY_KEEP, keys.experiment("")],
    )  # fmt: skip


def stop_experiment_call(
    keys: Keys, experiment_id: str, now: float, variant: str | None, promoted: str | None
) -> ScriptCall:
    """KEYS/ARGV of ``lua/stop_experiment.lua``."""
    return ScriptCall(
        [keys.experiment_serving, keys.experiment(experiment_id)],
        [now, variant or "", promoted or ""],
    )


class Experiments:
    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts

    def start(self, experiment_id: str, definition: str, now: float) -> tuple[StartResult, str]:
        """Start an experiment with ``definition`` (canonical JSON) unless another runs or the
        id was used; (result, the id of the experiment that runs instead, for ``busy``).

        Raises:
            redis.RedisError: Redis failed.
        """
        call = start_experiment_call(self.keys, experiment_id, definition, now)
        reply = self.scripts.start_experiment(keys=call.keys, args=call.args)
        running = str(text(reply[1])) if len(reply) > 1 else ""
        return cast(StartResult, str(text(reply[0]))), running

    def stop(
        self, experiment_id: str, now: float, variant: str | None, promoted: dict[str, Any] | None
    ) -> StopResult:
        """Stop the experiment if it runs; then ``promoted`` serves everyone (None: the
        configured policy).

        Raises:
            redis.RedisError: Redis failed.
        """
        serving = None if promoted is None else canonical(promoted)
        call = stop_experiment_call(self.keys, experiment_id, now, variant, serving)
        reply = self.scripts.stop_experiment(keys=call.keys, args=call.args)
        return cast(StopResult, str(text(reply)))

    def serving(self) -> ServingState:
        """What serves now (one command)."""
        raw = {str(text(k)): str(text(v)) for k, v in
               self.client.hgetall(self.keys.experiment_serving).items()}  # fmt: skip
        return ServingState(
            version=int(raw.get("version", 0)),
            experiment=raw.get("experiment") or None,
            definition=json.loads(raw["definition"]) if raw.get("definition") else None,
            promoted=json.loads(raw["promoted"]) if raw.get("promoted") else None,
        )

    def get(self, experiment_id: str) -> ExperimentRecord | None:
        """One experiment, or None if unknown (or dropped from the history)."""
        return _record(experiment_id, self.client.hgetall(self.keys.experiment(experiment_id)))

    def history(self, limit: int = HISTORY_KEEP) -> list[ExperimentRecord]:
        """The experiments kept, most recently started first."""
        found: list[Any] = self.client.zrevrange(self.keys.experiment_history, 0, limit - 1)
        ids = [str(text(i)) for i in found]
        pipe = batch(self.client)
        for experiment_id in ids:
            pipe.hgetall(self.keys.experiment(experiment_id))
        records = (_record(i, raw) for i, raw in zip(ids, pipe.execute(), strict=True))
        return [record for record in records if record is not None]


def _record(experiment_id: str, raw: dict[Any, Any]) -> ExperimentRecord | None:
    fields = {str(text(k)): str(text(v)) for k, v in raw.items()}
    if "definition" not in fields:
        return None
    return ExperimentRecord(
        experiment_id=experiment_id,
        definition=json.loads(fields["definition"]),
        status=fields["status"],
        started_at=float(fields["started_at"]),
        stopped_at=float(fields["stopped_at"]) if fields.get("stopped_at") else None,
        promoted=fields.get("promoted") or None,
    )
