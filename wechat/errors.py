"""Typed WeChat errors, grouped by what the caller must do about them (protocol page §1.3).

Messages carry the errcode and WeChat's errmsg, never a URL, token, ticket or secret.
"""

from __future__ import annotations


class WeChatError(Exception):
    """A WeChat call failed. ``errcode`` is WeChat's, or None for transport failures."""

    def __init__(self, errcode: int | None, errmsg: str, *, endpoint: str = "") -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.endpoint = endpoint
        where = f" on {endpoint}" if endpoint else ""
        super().__init__(f"WeChat errcode {errcode}{where}: {errmsg}")


class RetryableError(WeChatError):
    """-1 system busy, a timeout or a connection failure: retry later with backoff."""


class TokenInvalidError(WeChatError):
    """40001 / 40014 / 42001: the access_token is stale. Refresh once, retry once."""


class MinuteQuotaError(WeChatError):
    """45011: per-minute quota; wait for the next minute."""


class DailyQuotaError(WeChatError):
    """45009: daily quota reached; stop this account's outbound work until it comes back."""


class ConfigurationError(WeChatError):
    """Wrong appid/secret, IP not whitelisted, API not granted: ops must fix; never retried."""


class BusinessError(WeChatError):
    """Any other errcode: the request itself was refused (invalid code, already consumed…)."""


class SignatureError(Exception):
    """An inbound signature, msg_signature or safe-mode payload failed its check."""


TOKEN_INVALID = frozenset({40001, 40014, 42001})
CONFIGURATION = frozenset({40013, 40125, 40164, 48001, 48004, 40243, 89501, 89503, 89506, 89507})
RETRYABLE = frozenset({-1})
#: On the credential endpoints themselves 40001 means a wrong AppSecret, not a stale token (§1.3).
CREDENTIAL_ENDPOINTS = frozenset({"/cgi-bin/token", "/cgi-bin/stable_token"})


def error_for(errcode: int, errmsg: str, *, endpoint: str = "") -> WeChatError:
    """Map an errcode to the error class that says what to do next."""
    if errcode in RETRYABLE:
        cls: type[WeChatError] = RetryableError
    elif errcode in TOKEN_INVALID:
        cls = ConfigurationError if endpoint in CREDENTIAL_ENDPOINTS else TokenInvalidError
    elif errcode == 45011:
        cls = MinuteQuotaError
    elif errcode == 45009:
        cls = DailyQuotaError
    elif errcode in CONFIGURATION:
        cls = ConfigurationError
    else:
        cls = BusinessError
    return cls(errcode, errmsg, endpoint=endpoint)
