"""The benchmark of the production stack (``bin/bench``); see ``__main__`` for its phases."""
