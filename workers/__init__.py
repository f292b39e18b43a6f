"""dramatiq actors. ``workers.broker`` must be imported first: it binds the Redis broker."""
