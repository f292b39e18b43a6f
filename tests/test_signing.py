"""The cardExt and server-URL signatures against the protocol page's official vectors."""

import json

from typer.testing import CliRunner

from cardpipe.cli import app
from wechat.signing import CardExt, card_ext_signed_values, server_signature, sha1_signature, sort_concat

OFFICIAL = {
    "api_ticket": "ojZ8YtyVyr30HheH3CM73y7h4jJE",
    "card_id": "pjZ8Yt1XGILfi-FUsewpnnolGgZk",
}


def test_official_card_ext_vector() -> None:
    ext = CardExt(timestamp=1404896688, nonce_str="123", code="1434008071")
    assert sort_concat(ext.signed_values(**OFFICIAL)) == (
        "12314048966881434008071ojZ8YtyVyr30HheH3CM73y7h4jJEpjZ8Yt1XGILfi-FUsewpnnolGgZk"
    )
    assert ext.signature(**OFFICIAL) == "f137ab68b7f8112d20ee528ab6074564e2796250"


def test_server_url_vector() -> None:
    assert server_signature("test", "1410685589", "test") == "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff"


def test_card_ext_json_contains_exactly_the_signed_fields_present() -> None:
    ext = CardExt(timestamp=1404896688, nonce_str="n1", code="ABC123", outer_str="order-7")
    payload = json.loads(ext.to_json(**OFFICIAL))
    assert set(payload) == {"code", "timestamp", "nonce_str", "outer_str", "signature"}
    # What a receiver recomputes from the JSON equals what was signed: outer_str is not signed.
    assert (
        sha1_signature(card_ext_signed_values(OFFICIAL["api_ticket"], OFFICIAL["card_id"], payload))
        == (payload["signature"])
    )


def test_card_ext_without_code_or_openid_leaves_them_out() -> None:
    payload = json.loads(CardExt(timestamp=1, nonce_str="n").to_json(**OFFICIAL))
    assert "code" not in payload and "openid" not in payload


def test_values_are_sorted_as_bytes_not_case_insensitively() -> None:
    assert sort_concat(["b", "B", "a", "1"]) == "1Bab"


def test_sign_ext_command_prints_the_official_signature() -> None:
    result = CliRunner().invoke(
        app,
        [
            "sign-ext",
            "--api-ticket", OFFICIAL["api_ticket"],
            "--timestamp", "1404896688",
            "--card-id", OFFICIAL["card_id"],
            "--code", "1434008071",
            "--nonce", "123",
            "--explain",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    card_ext = json.loads(result.output.strip().splitlines()[-1])
    assert card_ext["signature"] == "f137ab68b7f8112d20ee528ab6074564e2796250"
    assert "hashed string: 12314048966881434008071ojZ8Yty" in result.output
