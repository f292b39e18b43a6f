"""dramatiq actors. ``workers.broker`` must be imported first: it binds the Redis broker."""

from workers import claims, credentials, events, inbox, preissue, redemptions  # noqa: F401
