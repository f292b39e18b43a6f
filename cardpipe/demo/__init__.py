"""``cardpipe demo``: a whole event on the embedded stack (or on DATABASE_URL/REDIS_URL)."""
