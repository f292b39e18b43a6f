"""Logging set-up with a filter that keeps secrets out of every log line.

urllib3 logs request URLs at DEBUG, and WeChat puts ``access_token`` and ``secret`` in query
strings; the filter rewrites those values (and JSON fields of the same names) before any
handler sees the record.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

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
        # A traceback is text too: requests' exceptions quote the full URL, query string and all.
        # Formatters reuse a pre-set exc_text instead of formatting exc_info again.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when the handler was
    made, so a handler outliving a redirected stderr (test runners, CliRunner) never writes to a
    closed stream."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        return


def configure_logging(*, verbose: bool = False) -> None:
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
