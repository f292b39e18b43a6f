"""Logging set-up with a filter that keeps secrets out of every log line.

urllib3 logs request URLs at DEBUG, and WeChat puts ``access_token`` and ``secret`` in query
strings; the filter rewrites those values (and JSON fields of the same names) before any
handler sees the record.
"""

from __future__ import annotations

import logging
import re

_SECRET_NAMES = (
    "access_token",
    "secret",
    "appsecret",
    "ticket",
    "api_ticket",
    "session_key",
    "encoding_aes_key",
    "js_code",
)
_QUERY_SECRET = re.compile(r"(?i)\b(" + "|".join(_SECRET_NAMES) + r")=([^&\s\"']+)")
_JSON_SECRET = re.compile(r'(?i)"(' + "|".join(_SECRET_NAMES) + r')"\s*:\s*"[^"]*"')


def redact(text: str) -> str:
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}=***", text)
    return _JSON_SECRET.sub(lambda m: f'"{m.group(1)}":"***"', text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging(*, verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
