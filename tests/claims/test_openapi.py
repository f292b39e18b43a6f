"""The claim and push endpoints are fully described in the OpenAPI schema: request and response
models, error shapes, the session security scheme, and every reference resolves."""

from __future__ import annotations

from typing import Any

from api import create_app

ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
VALIDATION = {"$ref": "#/components/schemas/HTTPValidationError"}


def schemas(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        code: {k: v.get("schema") for k, v in r.get("content", {}).items()}
        for code, r in operation["responses"].items()
    }


def json_of(name: str) -> dict[str, Any]:
    return {"application/json": {"$ref": f"#/components/schemas/{name}"}}


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_the_client_and_push_endpoints_are_fully_documented() -> None:
    spec = create_app().openapi()
    paths = spec["paths"]

    session = paths["/v1/sessions"]["post"]
    assert session["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SessionIn"}
    assert schemas(session) == {
        "200": json_of("SessionOut"),
        **{code: {"application/json": ERROR} for code in ("401", "404", "413", "429", "502", "503")},
        "422": {"application/json": VALIDATION},
    }

    poll = paths["/v1/orders/{order_no}/claim"]["get"]
    assert poll["security"] == [{"MiniProgramSession": []}]
    assert {(p["name"], p["in"]) for p in poll["parameters"]} == {("order_no", "path"), ("if-none-match", "header")}
    assert set(poll["responses"]["200"]["headers"]) == {"ETag", "Retry-After"}
    assert schemas(poll) == {
        "200": json_of("ClaimPayload"),
        "304": {},
        **{code: {"application/json": ERROR} for code in ("401", "404", "503")},
        "422": {"application/json": VALIDATION},
    }

    request = paths["/v1/orders/{order_no}/claim"]["post"]
    assert request["security"] == [{"MiniProgramSession": []}]
    assert schemas(request)["202"] == json_of("ClaimRequested")

    result = paths["/v1/orders/{order_no}/claim/result"]["post"]
    assert result["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AddCardResult"
    }
    assert schemas(result) == {
        "202": json_of("ResultAccepted"),
        **{code: {"application/json": ERROR} for code in ("401", "404", "413", "503")},
        "422": {"application/json": VALIDATION},
    }

    for method in ("get", "post"):
        push = paths["/wechat/{oa_appid}/events"][method]
        documented = schemas(push)
        assert documented.pop("200") == {"text/plain": {"type": "string"}}
        assert documented.pop("422") == {"application/json": VALIDATION}
        assert documented == {code: {"application/json": ERROR} for code in ("400", "403", "404", "413")}
    push_body = paths["/wechat/{oa_appid}/events"]["post"]["requestBody"]["content"]
    assert set(push_body) == {"application/xml"}

    assert spec["components"]["securitySchemes"]["MiniProgramSession"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The session token `POST /v1/sessions` returned.",
    }
    components = spec["components"]["schemas"]
    assert all(ref.removeprefix("#/components/schemas/") in components for ref in refs(spec["paths"]))
    assert set(components["AddCardItem"]["properties"]) == {"cardId", "cardExt", "code", "isSuccess"}
    assert set(components["ClaimPayload"]["properties"]) == {"order_no", "status", "cardList", "retry_after_ms"}
