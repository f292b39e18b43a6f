"""Venue operations: check-in lists and gates (``lists``, ``gates``), the one decision both the
online and the offline gate take (``rules``), scans at an online gate (``admission``), who is
inside (``occupancy``), offline snapshots and deltas (``snapshot``) and the merge of uploaded
offline scans (``offline_sync``)."""
