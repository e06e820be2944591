"""The storage layer: every Redis key and command of postbandit, one module per concern.

==================  ===========================================================================
module              owns
==================  ===========================================================================
``keys``            every key template with its hash tag, and the hash fields (the key layout)
``request_ids``     the request id format (time, member tag, random)
``scripts``         the Lua scripts (``lua/*.lua``), read and registered once per client
``catalogue``       posts, forums, live sets, withdrawals
``counting``        applying events to the statistics; pruning long-expired posts
``serving``         served slates and members' clicks (serving, attribution look-up)
``shown``           members' impressions and clicks for the seen-limit
``snapshot_reads``  what the web processes' snapshots read (changes, forums)
``journal``         the journal of accepted event batches
``decision_log``    the decision and outcome streams
``experiments``     experiment definitions, the running one, the promoted policy, history
``experiment_counts`` what each experiment counted per variant and member bucket
``drain_cursors``   the decision log drain's cursors and lock
``broker``          reads of Celery's Redis broker (queue length and head)
``records``         the records returned, and :class:`PostConflict`
``facade``          :class:`Storage`, the parts above on one client
==================  ===========================================================================
"""

from core.storage.broker import oldest_waiting_task, queue_length
from core.storage.decision_log import OUTCOMES_PER_DECISION
from core.storage.facade import Storage
from core.storage.keys import Keys
from core.storage.records import (
    ForumRead,
    ForumRecord,
    PostConflict,
    PostRecord,
    PostStates,
    RequestContext,
    Served,
    SlateArm,
    StreamEntry,
)
from core.storage.request_ids import new_request_id, request_time

__all__ = [
    "OUTCOMES_PER_DECISION",
    "ForumRead",
    "ForumRecord",
    "Keys",
    "PostConflict",
    "PostRecord",
    "PostStates",
    "RequestContext",
    "Served",
    "SlateArm",
    "Storage",
    "StreamEntry",
    "new_request_id",
    "oldest_waiting_task",
    "queue_length",
    "request_time",
]
