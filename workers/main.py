"""Entry point of the worker process: ``celery -A workers.main worker``.

The app is built from the environment here, and only here, so that importing
``core.queue`` (as the web tier does to publish) reads nothing at import time.

The worker never writes into the web tier's multiprocess metrics directory: prometheus-client
chooses its value store once, when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``, and
a worker given the web's variable (a shared ``.env`` under a Procfile runner) would add its
counters, and a ``0`` memory series per worker process, to the web's ``/metrics``. So the
variable is dropped here, before anything imports prometheus-client; the worker serves its own
registry (workers/monitoring.py).
"""

import os
import sys

MULTIPROCESS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def leave_the_web_metrics_alone() -> None:
    """Drop the multiprocess variables from this process's environment.

    Raises:
        RuntimeError: prometheus-client was imported before, in multiprocess mode.
    """
    for name in MULTIPROCESS_VARIABLES:
        os.environ.pop(name, None)
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass is not values.MutexValue:
        raise RuntimeError(
            "prometheus-client was imported with PROMETHEUS_MULTIPROC_DIR set: unset it for "
            "the worker, which serves its own /metrics"
        )


leave_the_web_metrics_alone()

from core.queue import make_celery  # noqa: E402
from core.settings import ConfigError, Settings  # noqa: E402
from workers import decision_drain, monitoring, sweeper  # noqa: E402

try:
    settings = Settings.from_env(role="worker")
except ConfigError as exc:  # one line naming the variable, not Celery's "unable to load" trace
    raise SystemExit(f"worker: {exc}") from None
app = make_celery(settings)
monitoring.install(app)
sweeper.install(app)
decision_drain.install(app)
