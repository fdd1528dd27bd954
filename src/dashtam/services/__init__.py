"""Business rules. Functions are keyword-only with ``session`` first and own their commits."""
