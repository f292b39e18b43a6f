"""dramatiq actors. ``workers.broker`` must be imported first: it binds the Redis broker."""

from workers import claims, credentials, inbox, preissue, pushes, redemptions  # noqa: F401
