"""dramatiq actors. ``workers.broker`` must be imported first: it binds the Redis broker. The inbox
drain (:mod:`workers.inbox_drain`) joins the broker's middleware here, after the actors it uses."""

import dramatiq

from workers import (  # noqa: F401
    claims,
    confirmations,
    credentials,
    inbox,
    preissue,
    pushes,
    redemptions,
    resign,
)
from workers.inbox_drain import InboxDrain

dramatiq.get_broker().add_middleware(InboxDrain())
