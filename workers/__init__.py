"""dramatiq actors. ``workers.broker`` must be imported first: it binds the Redis broker."""

from workers import (  # noqa: F401
    claims,
    confirmations,
    credentials,
    events,
    inbox,
    preissue,
    redemptions,
    resign,
)
