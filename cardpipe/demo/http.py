"""HTTP helpers of the demo's clients."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

#: Buyers claiming at the same time (one thread and one pooled connection each).
USER_THREADS = 16


def retrying(session: requests.Session) -> requests.Session:
    """Clients retry a 5xx after a short pause, as the Mini Program does (the embedded SQLite
    refuses a write that raced another one instead of waiting for it)."""
    retry = Retry(total=5, backoff_factor=0.2, status_forcelist=(500, 502, 503), allowed_methods=None)
    session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=USER_THREADS))
    return session


def ok(response: requests.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.url} → {response.status_code}: {response.text[:300]}")
    return response.json() if response.content else None
