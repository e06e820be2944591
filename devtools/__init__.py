"""Development and test helpers: an embedded real Redis, the local process runner, demo data."""
