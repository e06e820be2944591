"""The experiment API, one function per operation: define and start, read, stop (and promote).

A definition is checked here for what its model cannot say alone, and stored normalised:
every parameter that its policy takes, the configured value where the caller gave none, so
the stored definition is exactly what serves. Starting and stopping are single atomic steps
in Redis (core.storage.experiments); every web process serves the change from its next
snapshot refresh (app.plans).
"""

from __future__ import annotations

import time
from typing import Any

from app.errors import Conflict, InvalidInput, NotFound
from app.experiment_schemas import ExperimentIn, StopIn, VariantIn
from app.runtime import Runtime
from bandits import make_policy
from core.experiments.assignment import ASSIGNMENT_BUCKETS, Allocation
from core.metrics import NO_VARIANT
from core.settings import POLICY_SETTINGS, Settings
from core.storage.experiments import ExperimentRecord, canonical


def put_experiment(
    rt: Runtime, experiment_id: str, body: ExperimentIn
) -> tuple[dict[str, Any], bool]:
    """Start an experiment; its view and whether it was started by this call (False: it
    already runs with this very definition).

    Raises:
        InvalidInput: a definition the model alone cannot refuse (see :func:`definition`).
        Conflict: another experiment runs; this one runs with other variants; or this id
            was used by an experiment that stopped (ids are never reused).
    """
    stored = canonical(definition(rt.settings, body))
    result, running = rt.storage.experiments.start(experiment_id, stored, time.time())
    if result == "busy":
        raise Conflict(f"experiment {running} is running; stop it before starting another",
                       field="experiment_id")  # fmt: skip
    if result == "changed":
        raise Conflict(f"experiment {experiment_id} is running with another definition; stop "
                       "it and start a new experiment", field="variants")  # fmt: skip
    if result == "stopped":
        raise Conflict(f"experiment {experiment_id} was stopped; an experiment id is never "
                       "reused", field="experiment_id")  # fmt: skip
    return get_experiment(rt, experiment_id), result == "created"


def definition(settings: Settings, body: ExperimentIn) -> dict[str, Any]:
    """The definition to store: distinct variant names (not ``none``), a control among
    them, only the parameters each policy takes (the configured values where none is given),
    and weights that give every variant members.

    Raises:
        InvalidInput: naming the variant's field (``variants[1].params.exploration``).
    """
    _check_names(body)
    variants = [_variant(settings, i, v) for i, v in enumerate(body.variants)]
    _check_shares(body.variants)
    return {"variants": variants, "control": body.control}


def _check_names(body: ExperimentIn) -> None:
    names = [v.name for v in body.variants]
    for i, name in enumerate(names):
        field = f"variants[{i}].name"
        if name == NO_VARIANT:
            # The metric of slates by variant counts those outside an experiment as "none".
            raise InvalidInput(f"{field}: {NO_VARIANT} is reserved for no variant", field)
        if name in names[:i]:
            raise InvalidInput(f"{field}: {name} is given twice; names must be distinct", field)
    if body.control not in names:
        raise InvalidInput(f"control: {body.control} is not a variant ({', '.join(names)})",
                           "control")  # fmt: skip


def _variant(settings: Settings, index: int, variant: VariantIn) -> dict[str, Any]:
    """The variant with every parameter its policy takes; each given one checked alone, so
    the error names it."""
    accepted = POLICY_SETTINGS[variant.policy]
    for name, value in variant.params.items():
        field = f"variants[{index}].params.{name}"
        if name not in accepted:
            raise InvalidInput(f"{field}: not a parameter of policy {variant.policy} (accepted: "
                               f"{', '.join(accepted) or 'none'})", field)  # fmt: skip
        try:
            make_policy(variant.policy, **{name: value})
        except ValueError as exc:
            raise InvalidInput(f"{field}: {exc}", field) from exc
    params = {name: float(variant.params.get(name, getattr(settings, name))) for name in accepted}
    return {"name": variant.name, "policy": variant.policy, "params": params,
            "weight": variant.weight}  # fmt: skip


def _check_shares(variants: list[VariantIn]) -> None:
    """Refuse a weight so small against the others that its variant would get no member."""
    ends = Allocation.of([(v.name, v.weight) for v in variants]).ends
    for i, (start, end) in enumerate(zip((0, *ends), ends, strict=False)):
        if end <= start:
            raise InvalidInput(
                f"variants[{i}].weight: gets no member; a weight must be at least "
                f"1/{ASSIGNMENT_BUCKETS} of the total", f"variants[{i}].weight",
            )  # fmt: skip


def get_experiment(rt: Runtime, experiment_id: str) -> dict[str, Any]:
    """One experiment's definition, status, times and promoted variant.

    Raises:
        NotFound: unknown id (or one past the history's last 100).
    """
    record = rt.storage.experiments.get(experiment_id)
    if record is None:
        raise NotFound(f"experiment {experiment_id} is not known", field="experiment_id")
    return _view(record)


def list_experiments(rt: Runtime) -> dict[str, Any]:
    """The running experiment, the policy outside an experiment, and the history."""
    state = rt.storage.experiments.serving()
    promoted = state.promoted
    if promoted is None:
        default = {"policy": rt.settings.policy, "params": rt.settings.policy_params(),
                   "promoted": None}  # fmt: skip
    else:
        default = {"policy": promoted["policy"], "params": promoted["params"],
                   "promoted": {"experiment": promoted["experiment"],
                                "variant": promoted["variant"]}}  # fmt: skip
    history = [_view(r) for r in rt.storage.experiments.history()]
    return {"running": state.experiment, "default_policy": default, "experiments": history}


def stop_experiment(rt: Runtime, experiment_id: str, body: StopIn) -> dict[str, Any]:
    """Stop the running experiment; from the next refresh on the promoted variant's policy
    serves everyone, or without ``promote`` the configured policy. The stopped experiment's
    view.

    Raises:
        NotFound: unknown id.
        Conflict: the experiment is already stopped.
        InvalidInput: ``promote`` is not one of its variants.
    """
    record = rt.storage.experiments.get(experiment_id)
    if record is None:
        raise NotFound(f"experiment {experiment_id} is not known", field="experiment_id")
    if record.status != "running":
        raise _already_stopped(experiment_id)
    promoted = None if body.promote is None else _promotion(record, body.promote)
    result = rt.storage.experiments.stop(experiment_id, time.time(), body.promote, promoted)
    if result != "stopped":
        raise _already_stopped(experiment_id)
    return get_experiment(rt, experiment_id)


def _promotion(record: ExperimentRecord, name: str) -> dict[str, Any]:
    variants = record.definition["variants"]
    found = [v for v in variants if v["name"] == name]
    if not found:
        names = ", ".join(v["name"] for v in variants)
        raise InvalidInput(f"promote: {name} is not a variant of experiment "
                           f"{record.experiment_id} ({names})", "promote")  # fmt: skip
    return {"experiment": record.experiment_id, "variant": name,
            "policy": found[0]["policy"], "params": found[0]["params"]}  # fmt: skip


def _already_stopped(experiment_id: str) -> Conflict:
    return Conflict(f"experiment {experiment_id} is already stopped", field="experiment_id")


def _view(record: ExperimentRecord) -> dict[str, Any]:
    return {
        "experiment_id": record.experiment_id,
        "variants": record.definition["variants"],
        "control": record.definition["control"],
        "status": record.status,
        "started_at": record.started_at,
        "stopped_at": record.stopped_at,
        "promoted": record.promoted,
    }
