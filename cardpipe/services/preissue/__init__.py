"""Pre-issue (being split by job; everything is importable from here meanwhile)."""

from cardpipe.services.preissue.issue import *  # noqa: F403
