"""One object holding the storage parts of a process, all on the one client passed in."""

from __future__ import annotations

import redis

from core.storage.catalogue import Catalogue
from core.storage.counting import Counting
from core.storage.decision_log import DecisionLog
from core.storage.drain_cursors import DrainCursors
from core.storage.experiment_counts import ExperimentCounts
from core.storage.experiments import Experiments
from core.storage.journal import Journal
from core.storage.keys import Keys
from core.storage.scripts import Scripts
from core.storage.serving import Serving
from core.storage.shown import Shown
from core.storage.snapshot_reads import CHANGES_KEEP_SECONDS, SnapshotReads


class Storage:
    """The parts by what they own: ``catalogue``, ``counting``, ``serving`` (attribution),
    ``shown`` (members' impressions for the seen-limit), ``snapshots`` (reads for the
    snapshot), ``journal``, ``decisions`` (the decision log), ``experiments``,
    ``experiment_counts`` (what each experiment counted), ``drains`` (where the decision log
    drain stands).

    ``decision_log_maxlen`` is how many decisions the decision log keeps (0: no log);
    ``forum_window`` is W of the windowed forum totals (0: none, the policy takes every
    impression); ``changes_keep_seconds`` is how long each forum's change log keeps a change
    (a snapshot that has not read it for half of this reloads in full);
    ``journal_replicas`` replicas must acknowledge each batch the journal accepts within
    ``journal_wait_ms`` (0: none, see :mod:`core.storage.journal`); ``half_life`` is the
    half-life of the decayed counters in seconds (0: none kept, and the snapshots and post
    reads take the exact counts only).
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "pb",
        decision_log_maxlen: int = 0,
        forum_window: int = 0,
        changes_keep_seconds: float = CHANGES_KEEP_SECONDS,
        journal_replicas: int = 0,
        journal_wait_ms: int = 100,
        half_life: int = 0,
    ) -> None:
        self.client = client
        self.keys = keys = Keys(prefix)
        self.forum_window = forum_window
        scripts = Scripts(client)
        keep_us = int(changes_keep_seconds * 1_000_000)
        self.half_life = half_life
        self.snapshots = SnapshotReads(client, keys, forum_window, keep_us, half_life)
        self.decisions = DecisionLog(client, keys, decision_log_maxlen)
        self.catalogue = Catalogue(client, keys, scripts, forum_window, keep_us, half_life)
        self.counting = Counting(client, keys, scripts, self.decisions, forum_window, keep_us,
                                 half_life)  # fmt: skip
        self.experiment_counts = ExperimentCounts(client, keys, scripts)
        self.serving = Serving(client, keys, scripts, self.decisions, self.experiment_counts)
        self.shown = Shown(client, keys, scripts)
        self.journal = Journal(client, keys, journal_replicas, journal_wait_ms)
        self.experiments = Experiments(client, keys, scripts)
        self.drains = DrainCursors(client, keys)

    def ping(self) -> bool:
        return bool(self.client.ping())
