"""HTTP routers. Each validates, persists or reads, and enqueues; none does the work itself."""
