"""Sticky assignment: a pure function of the ids, uniform, weighted, independent across
experiments and of the statistics bucket."""

import os
import subprocess
import sys
from functools import cache

import numpy as np
import pytest
from scipy import stats

from core.experiments.assignment import (
    ASSIGNMENT_BUCKETS,
    Allocation,
    assignment_bucket,
    member_bucket,
)

THREE = Allocation.of([("control", 1), ("treatment", 1), ("third", 2)])

# Computed once, by this implementation: any change of hash, salt or encoding would move
# every running experiment's members, so it must fail here.
TABLE = [
    (("exp-1", "alice"), (2307, "control", 57)),
    (("exp-1", "bob"), (2706, "treatment", 6)),
    (("exp-1", "carol"), (5584, "third", 32)),
    (("exp-1", "u:1"), (4640, "treatment", 56)),
    (("exp-1", "42"), (3839, "treatment", 28)),
    (("homepage-2024", "alice"), (8182, "third", 42)),
    (("homepage-2024", "bob"), (8265, "third", 44)),
    (("homepage-2024", "carol"), (349, "control", 17)),
    (("homepage-2024", "u:1"), (276, "control", 16)),
    (("homepage-2024", "42"), (1514, "control", 1)),
]

N_IDS = 100_000
P_MIN = 0.001  # a correct hash fails each test below with probability 0.001 (fixed ids)


def row(experiment_id, user_id):
    return (
        assignment_bucket(experiment_id, user_id),
        THREE.assign(experiment_id, user_id),
        member_bucket(experiment_id, user_id),
    )


@cache
def buckets_of(experiment_id):
    """Assignment and statistics buckets of the N_IDS synthetic members user-0, user-1..."""
    ids = [f"user-{i}" for i in range(N_IDS)]
    assigned = np.array([assignment_bucket(experiment_id, u) for u in ids])
    return assigned, np.array([member_bucket(experiment_id, u) for u in ids])


@pytest.mark.parametrize(("ids", "expected"), TABLE)
def test_assignment_is_the_fixed_table(ids, expected):
    assert row(*ids) == expected
    assert row(*ids) == expected  # and again: no state


def test_assignment_is_the_same_in_another_process_with_another_hash_seed():
    code = (
        "import sys\n"
        "from core.experiments.assignment import Allocation, assignment_bucket, member_bucket\n"
        "three = Allocation.of([('control', 1), ('treatment', 1), ('third', 2)])\n"
        f"table = {TABLE!r}\n"
        "print(all((assignment_bucket(*ids), three.assign(*ids), member_bucket(*ids)) == row\n"
        "          for ids, row in table), 'numpy' in sys.modules)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "False"]  # the same rows, and pure Python


def test_assignment_buckets_are_uniform():
    """100,000 ids over 100 groups of 100 buckets (1,000 expected each): chi-square, 99 df."""
    assigned, _ = buckets_of("uniformity")
    counts = np.bincount(assigned // 100, minlength=100)
    assert stats.chisquare(counts).pvalue > P_MIN
    assert assigned.min() >= 0 and assigned.max() < ASSIGNMENT_BUCKETS


def test_statistics_buckets_are_uniform_and_independent_of_the_variant():
    assigned, stat = buckets_of("uniformity")
    assert stats.chisquare(np.bincount(stat, minlength=64)).pvalue > P_MIN
    variant = assigned >= ASSIGNMENT_BUCKETS // 2
    table = np.stack(
        [np.bincount(stat[variant], minlength=64), np.bincount(stat[~variant], minlength=64)]
    )
    assert stats.chi2_contingency(table, correction=False).pvalue > P_MIN


def test_weights_are_respected_within_binomial_error():
    """Weights 1:2:7: each share within 4 binomial standard errors (0.1-0.15 % here) of its
    weight, and the counts pass the chi-square test against the weights."""
    alloc = Allocation.of([("a", 1), ("b", 2), ("c", 7)])
    assigned, _ = buckets_of("weights")
    names = np.array([alloc.variant_of_bucket(int(b)) for b in assigned])
    counts = np.array([(names == n).sum() for n in alloc.names])
    shares = np.array([0.1, 0.2, 0.7])
    assert np.all(np.abs(counts / N_IDS - shares) <= 4 * np.sqrt(shares * (1 - shares) / N_IDS))
    assert stats.chisquare(counts, N_IDS * shares).pvalue > P_MIN


def test_experiments_assign_independently():
    """The same 100,000 members in two 50/50 experiments: the 2x2 table of their variants
    passes the chi-square test of independence."""
    first = buckets_of("exp-a")[0] < ASSIGNMENT_BUCKETS // 2
    second = buckets_of("exp-b")[0] < ASSIGNMENT_BUCKETS // 2
    table = [[np.sum(first & second), np.sum(first & ~second)],
             [np.sum(~first & second), np.sum(~first & ~second)]]  # fmt: skip
    assert stats.chi2_contingency(table, correction=False).pvalue > P_MIN


def test_ranges_are_contiguous_in_declared_order():
    assert THREE.ends == (2500, 5000, 10000)
    assert [THREE.variant_of_bucket(b) for b in (0, 2499, 2500, 4999, 5000, 9999)] == [
        "control", "control", "treatment", "treatment", "third", "third",
    ]  # fmt: skip
    assert Allocation.of([("a", 1), ("b", 0), ("c", 2)]).ends == (3333, 3333, 10000)
    assert Allocation.of([("only", 5)]).assign("e", "u") == "only"


INVALID_ALLOCATIONS = [
    ([], "at least one"),
    ([("a", 1), ("a", 1)], "variant names must be distinct"),
    ([("", 1)], "variant names must be non-empty strings"),
    ([("a", -1), ("b", 2)], "weights must be finite, >= 0, not all 0"),
    ([("a", 0), ("b", 0)], "weights must be finite, >= 0, not all 0"),
    ([("a", float("nan"))], "weights must be finite"),
    ([("a", float("inf"))], "weights must be finite"),
    ([("a", True)], "weights must be finite"),
    ([("a", "1")], "weights must be finite"),
]


@pytest.mark.parametrize(("variants", "message"), INVALID_ALLOCATIONS)
def test_invalid_allocations_are_rejected(variants, message):
    with pytest.raises(ValueError, match=message):
        Allocation.of(variants)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: assignment_bucket("", "u"), "experiment_id must be a non-empty string"),
        (lambda: assignment_bucket("e", ""), "user_id must be a non-empty string"),
        (lambda: THREE.assign("e", 7), "user_id must be a non-empty string, got 7"),
        (lambda: member_bucket("e", "u", buckets=1), r"buckets must be an integer in \[2, 10000\]"),
        (lambda: member_bucket("e", "u", buckets=64.0), "buckets must be an integer"),
        (lambda: THREE.variant_of_bucket(10_000), r"bucket must be in \[0, 10000\)"),
    ],
)
def test_invalid_arguments_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
