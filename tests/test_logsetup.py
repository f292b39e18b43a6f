"""No secret reaches a log line: the redaction filter on every handler."""

import logging

import pytest

from cardpipe.logsetup import RedactSecrets, redact


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("GET /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=S3CR3T HTTP/1.1", "S3CR3T"),
        ("POST /card/code/get?access_token=TOK123 HTTP/1.1", "TOK123"),
        ('{"grant_type": "client_credential", "secret": "S3CR3T"}', "S3CR3T"),
        ('{"ticket":"TICKETVALUE","expires_in":7200}', "TICKETVALUE"),
    ],
)
def test_redact_removes_secret_values(line: str, secret: str) -> None:
    assert secret not in redact(line)


def test_filter_rewrites_formatted_records(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("cardpipe.test.redact")
    caplog.handler.addFilter(RedactSecrets())
    logger.warning("calling %s", "https://api/x?access_token=TOPSECRET&type=wx_card")
    assert "TOPSECRET" not in caplog.text
    assert "access_token=***" in caplog.text
