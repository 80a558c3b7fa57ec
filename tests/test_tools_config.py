"""Tools in the configuration: ``[[tools]]`` webhooks and each route's tools, transfer targets, keypad
menu and call budget. Every bad value names its key; the built-in tools' schemas are valid JSON
Schemas; the transfer enum is per route; the model's arguments are checked before anything runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
import pytest

from sipagent.config import ConfigError, Settings, load_settings
from sipagent.product.setup import route_tools
from sipagent.product.tools import (
    NO_TOOLS,
    KeyAction,
    check_arguments,
    end_call_spec,
    send_dtmf_spec,
    transfer_call_spec,
    validate_arguments,
)
from sipagent.voice.llm import ToolCall, ToolSpec

LOOKUP = """
[[tools]]
name = "lookup_order"
description = "Look up an order's status by its number."
url = "https://orders.example.com/api/status"
method = "GET"
timeout = 3
headers = { Authorization = "ORDERS_API_AUTH" }
[tools.parameters]
type = "object"
required = ["order_id"]
additionalProperties = false
[tools.parameters.properties.order_id]
type = "string"
pattern = "^[A-Z0-9]{6}$"
"""

ROUTES = """
[[routes]]
number = "+15550001111"
name = "shop"
tools = ["end_call", "lookup_order", "transfer_call", "send_dtmf"]
transfer_targets = { sales = "(555) 000-1234", support = "sip:support@pbx.example" }
keys = { "0" = "transfer:support", "9" = "end_call", "*" = "say:Our hours are nine to five." }
max_tool_calls = 2

[[routes]]
tools = ["end_call", "transfer_call"]
transfer_targets = { operator = "+442079460958" }
"""


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "sipagent.toml"
    path.write_text(text)
    return load_settings(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, text)
    return str(exc.value)


def _tool(**fields: str) -> str:
    """A [[tools]] table: the good one, with ``fields`` (TOML values) in place of its own."""
    values = {
        "name": '"lookup"',
        "description": '"Look it up."',
        "url": '"https://svc.example/x"',
        **fields,
    }
    return "[[tools]]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())


def test_a_full_configuration_builds_each_routes_tools(tmp_path: Path) -> None:
    settings = _load(tmp_path, LOOKUP + ROUTES)
    tool = settings.tools[0]
    assert (tool.method, tool.timeout, tool.headers) == ("GET", 3, {"Authorization": "ORDERS_API_AUTH"})
    built = route_tools(settings)
    assert set(built) == {"shop", "default"}
    shop = built["shop"]
    assert shop.names == ("end_call", "lookup_order", "transfer_call", "send_dtmf")
    assert shop.max_calls_per_turn == 2
    # National numbers become E.164 in the default country; SIP URIs stay as they are.
    assert dict(shop.transfer_targets) == {"sales": "+15550001234", "support": "sip:support@pbx.example"}
    assert dict(shop.keys) == {
        "0": KeyAction("transfer", target="support", uri="sip:support@pbx.example"),
        "9": KeyAction("end_call"),
        "*": KeyAction("say", text="Our hours are nine to five."),
    }
    webhook = shop.webhooks["lookup_order"]
    assert (webhook.url, webhook.method, webhook.headers, webhook.timeout_s) == (
        "https://orders.example.com/api/status",
        "GET",
        (("Authorization", "ORDERS_API_AUTH"),),
        3,
    )
    assert json.loads(webhook.parameters)["required"] == ["order_id"]
    assert "ORDERS_API_AUTH" not in webhook.spec.parameters  # the model is told nothing of headers
    default = built["default"]
    assert default.names == ("end_call", "transfer_call") and dict(default.webhooks) == {}
    assert dict(default.keys) == {} and default.max_calls_per_turn == 3


def test_the_transfer_enum_is_each_routes_own_targets(tmp_path: Path) -> None:
    built = route_tools(_load(tmp_path, LOOKUP + ROUTES))
    enums = {
        name: json.loads(tools.spec("transfer_call").parameters)["properties"]["target"]["enum"]  # type: ignore[union-attr]
        for name, tools in built.items()
    }
    assert enums == {"shop": ["sales", "support"], "default": ["operator"]}
    assert transfer_call_spec([]) is None
    shop = built["shop"]
    assert shop.arguments(ToolCall("1", "transfer_call", '{"target": "sales"}')) == {"target": "sales"}
    refused = shop.arguments(ToolCall("2", "transfer_call", '{"target": "operator"}'))
    assert isinstance(refused, str) and "'operator' is not one of ['sales', 'support']" in refused


def test_the_documented_example_loads(tmp_path: Path) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "tools.md").read_text()
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    shop = route_tools(_load(tmp_path, example))["shop"]
    assert shop.names == ("lookup_order", "book_callback", "transfer_call", "end_call")
    assert shop.webhooks["book_callback"].method == "POST"
    assert set(shop.keys) == {"0", "9", "*"}


def test_no_tools_by_default(tmp_path: Path) -> None:
    settings = _load(tmp_path, '[[routes]]\nnumber = "+15550001111"\n')
    assert route_tools(settings)["+15550001111"] == NO_TOOLS
    assert NO_TOOLS.specs == () and dict(NO_TOOLS.keys) == {}


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        (_tool(name='"end_call"'), "tools.0.name", "built-in"),
        (_tool(name='"look up"'), "tools.0.name", "not a tool name"),
        (_tool(description='"  "'), "tools.0.description", "must not be empty"),
        (_tool(url='"ftp://svc.example/x"'), "tools.0.url", "not an http:// or https:// URL"),
        (_tool(url='"https://user:pw@svc.example/x"'), "tools.0.url", "must not hold a user or password"),
        (_tool(method='"PUT"'), "tools.0.method", "'GET' or 'POST'"),
        (_tool(timeout="0"), "tools.0.timeout", "greater than 0"),
        (
            _tool(headers='{ Authorization = "Bearer sk_live_123" }'),
            "tools.0.headers",
            "NAME of an environment",
        ),
        (_tool(headers='{ "Content-Length" = "X" }'), "tools.0.headers", "set by the server itself"),
        (_tool(parameters='{ type = "array" }'), "tools.0.parameters", 'type = "object"'),
        (
            _tool(parameters='{ type = "object", properties = { id = { type = "strin" } } }'),
            "tools.0.parameters",
            "not a valid JSON Schema at properties.id.type",
        ),
        (
            _tool(parameters='{ type = "object", required = "id" }'),
            "tools.0.parameters",
            "not a valid JSON Schema at required",
        ),
        (
            _tool(
                parameters='{ type = "object", properties = { id = { "$ref" = "https://evil.example/s" } } }'
            ),
            "tools.0.parameters",
            "points outside the schema",
        ),
        (
            _tool(parameters='{ type = "object", "$schema" = "https://nope.example/schema" }'),
            "tools.0.parameters",
            "not a JSON Schema draft",
        ),
        (_tool(parameters='{ type = "object", default = 1979-05-27 }'), "tools.0.parameters", "JSON cannot"),
        (_tool() + _tool(), "tools", "tools[1].name: 'lookup' is tools[0]'s too"),
        ('[[routes]]\ntools = ["end_call", "lookup_ordr"]\n', "routes", "routes[0].tools[1]: 'lookup_ordr'"),
        ('[[routes]]\ntools = ["end_call", "end_call"]\n', "routes.0.tools", "listed twice"),
        ('[[routes]]\ntools = ["transfer_call"]\n', "routes.0.tools", "transfer_call needs transfer_targets"),
        ("[[routes]]\nmax_tool_calls = 0\n", "routes.0.max_tool_calls", "greater than or equal to 1"),
        (
            '[[routes]]\ntransfer_targets = { sales = "call me" }\n',
            "routes.0.transfer_targets",
            "sales: 'call me' is neither a phone number",
        ),
        (
            '[[routes]]\ntransfer_targets = { "9x" = "+15550001234" }\n',
            "routes.0.transfer_targets",
            "target name",
        ),
        ('[[routes]]\ntransfer_targets = { pbx = "sip:" }\n', "routes.0.transfer_targets", "not a SIP URI"),
        ('[[routes]]\nkeys = { "x" = "end_call" }\n', "routes.0.keys", "'x' is not a keypad key"),
        ('[[routes]]\nkeys = { "1" = "hang_up" }\n', "routes.0.keys", "'1': 'hang_up' is not a key action"),
        ('[[routes]]\nkeys = { "1" = "say:" }\n', "routes.0.keys", "is not a key action"),
        ('[[routes]]\nkeys = { "0" = "transfer:operator" }\n', "routes.0.keys", "names no transfer target"),
    ],
)
def test_each_bad_value_names_its_key(tmp_path: Path, table: str, key: str, words: str) -> None:
    message = _error(tmp_path, table)
    assert f"  {key}: " in message and words in message, message


def test_a_transfer_number_that_is_no_number_names_its_key(tmp_path: Path) -> None:
    # Looks like a number to the settings; phonenumbers says it cannot be one in the default country.
    settings = _load(tmp_path, '[[routes]]\ntransfer_targets = { sales = "+1 555" }\n')
    with pytest.raises(ConfigError, match=r"routes\[0\]\.transfer_targets\.sales: '\+1 555' is not a phone"):
        route_tools(settings)


def test_method_is_read_in_any_case(tmp_path: Path) -> None:
    assert _load(tmp_path, _tool(method='"post"')).tools[0].method == "POST"


@pytest.mark.parametrize("spec", [end_call_spec(), send_dtmf_spec(), transfer_call_spec(["a", "b"])])
def test_the_built_in_specs_are_valid_json_schemas(spec: ToolSpec | None) -> None:
    assert spec is not None
    schema = json.loads(spec.parameters)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert spec.description


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"digits": "1234#"}', {"digits": "1234#"}),
        ('{"digits": "*0AD"}', {"digits": "*0AD"}),
        ('{"digits": "12x"}', "digits: '12x' does not match"),
        ('{"digits": ""}', "does not match"),
        ('{"digits": "' + "1" * 33 + '"}', "does not match"),
        ('{"digits": "1", "extra": 1}', "Additional properties are not allowed ('extra' was unexpected)"),
        ("{}", "'digits' is a required property"),
        ('{"digits": 12}', "12 is not of type 'string'"),
        ('{"digits": "1"', "are not valid JSON"),
        ('["1"]', "must be a JSON object, not an array"),
        ('"1"', "must be a JSON object, not a string"),
        ("null", "must be a JSON object, not null"),
    ],
)
def test_arguments_are_parsed_and_checked(arguments: str, expected: Any) -> None:
    result = validate_arguments(send_dtmf_spec(), arguments)
    if isinstance(expected, dict):
        assert result == expected
    else:
        assert isinstance(result, str) and expected in result, result
        assert "send_dtmf" in result  # the model learns which call to redo


def test_blank_arguments_are_an_empty_object() -> None:
    assert validate_arguments(end_call_spec(), "") == {}
    assert validate_arguments(end_call_spec(), '{"reason": "caller is done"}') == {"reason": "caller is done"}
    assert "is too long" in str(validate_arguments(end_call_spec(), json.dumps({"reason": "x" * 201})))


def test_schema_errors_are_listed_few_and_short() -> None:
    properties = {name: {"type": "integer"} for name in "abcde"}
    spec = ToolSpec("many", "", json.dumps({"type": "object", "properties": properties}))
    message = check_arguments(spec, {name: "x" * 1000 for name in "abcde"})
    assert message is not None
    assert message.count("is not of type 'integer'") == 3 and "(and 2 more)" in message
    assert len(message) < 1000


def test_formats_are_checked() -> None:
    schema = {"type": "object", "properties": {"day": {"type": "string", "format": "date"}}}
    spec = ToolSpec("book", "", json.dumps(schema))
    assert check_arguments(spec, {"day": "2026-12-24"}) is None
    assert "is not a 'date'" in (check_arguments(spec, {"day": "next tuesday"}) or "")


def test_a_tool_the_route_does_not_have_is_refused_by_name(tmp_path: Path) -> None:
    shop = route_tools(_load(tmp_path, LOOKUP + ROUTES))["shop"]
    refused = shop.arguments(ToolCall("1", "delete_everything", "{}"))
    assert isinstance(refused, str) and "no tool named 'delete_everything'" in refused
    assert "lookup_order" in refused
    assert shop.arguments(ToolCall("2", "lookup_order", '{"order_id": "AB12CD"}')) == {"order_id": "AB12CD"}
