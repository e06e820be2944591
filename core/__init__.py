"""What the web tier (``app/``) and the worker (``workers/``) share: settings, storage, metric
definitions, logging, attribution and the event queue's publishing side.

Nothing here imports Flask, ``app`` or ``workers``; the architecture contracts in
``pyproject.toml`` say so and the test command checks them.
"""
