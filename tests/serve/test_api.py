"""The chat-completions wire format without a server: the schema, options, stop strings."""

from __future__ import annotations

import json

import pytest

from lynx_edge.runtime.engine import answer_reserve
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.serve.api import UNSUPPORTED, ApiError, ChatRequest, StopFilter, parse_request

USER = [{"role": "user", "content": "hi"}]


def test_a_full_request_maps_to_engine_options() -> None:
    r = parse_request(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            "temperature": 0,
            "top_p": 0.9,
            "max_completion_tokens": 50,
            "seed": 3,
            "stop": "END",
            "stream": True,
            "stream_options": {"include_usage": True},
            "lynx": {"enabled": False, "alpha": 0.2},
            "frequency_penalty": 0.5,
            "presence_penalty": -0.5,
            "logit_bias": {"42": -100},
            "logprobs": True,
            "top_logprobs": 2,
            "user": "u1",
            "metadata": {"k": "v"},
            "store": False,
        }
    )
    assert r.chat() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    o = r.options()
    assert (o.temperature, o.top_p, o.max_tokens, o.seed, r.stops) == (0.0, 0.9, 50, 3, ["END"])
    assert r.stream and r.include_usage and o.exit == "none" and o.alpha is None
    assert (o.frequency_penalty, o.presence_penalty, o.logit_bias) == (0.5, -0.5, ((42, -100.0),))
    assert o.logprobs and o.top_logprobs == 2


def test_reasoning_effort_sets_the_risk_or_skips_thinking() -> None:
    assert parse_request({"messages": USER, "reasoning_effort": "low"}).options().alpha == 0.2
    assert parse_request({"messages": USER, "reasoning_effort": "high"}).options().alpha == 0.05
    assert parse_request({"messages": USER, "reasoning_effort": "low", "lynx": {"alpha": 0.1}}).options().alpha == 0.1
    for effort in ("none", "minimal"):  # what apps send to turn thinking off: never an error
        assert parse_request({"messages": USER, "reasoning_effort": effort}).options().think is False


def test_response_format_makes_a_grammar_and_keeps_room_for_the_answer() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    r = parse_request(
        {
            "messages": USER,
            "max_tokens": 300,
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}},
        }
    )
    o = r.options()
    assert o.json_schema == schema and answer_reserve(o, 300) == 64  # the engine keeps room for the JSON
    any_object = parse_request({"messages": USER, "response_format": {"type": "json_object"}}).options()
    assert any_object.json_schema == {"type": "object"} and answer_reserve(any_object, 300) is None  # no limit set
    assert parse_request({"messages": USER, "response_format": {"type": "text"}}).options().json_schema is None
    assert answer_reserve(o.but(max_tokens=40), 40) == 20  # a tight limit: half of it


def test_the_server_default_risk_level_applies_when_a_request_names_none() -> None:
    defaults = GenerationOptions(alpha=0.05, mode="per-cue")
    assert parse_request({"messages": USER}).options(defaults).alpha == 0.05
    assert parse_request({"messages": USER, "lynx": {"alpha": 0.2}}).options(defaults).alpha == 0.2
    assert parse_request({"messages": USER, "reasoning_effort": "low"}).options(defaults).alpha == 0.2
    assert parse_request({"messages": USER}).options(defaults).mode == "per-cue"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], "body"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": USER, "temperature": "hot"}, "temperature"),
        ({"messages": USER, "temperature": 3}, "temperature"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "seed": 1.5}, "seed"),
        ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": USER, "lynx": {"alpha": 1.5}}, "lynx.alpha"),
        ({"messages": USER, "lynx": {"alpha": 0}}, "lynx.alpha"),
        ({"messages": USER, "lynx": {"enabled": "yes"}}, "lynx.enabled"),
        ({"messages": USER, "lynx": {"sideways": 1}}, "lynx.sideways"),
        ({"messages": USER, "reasoning_effort": "max"}, "reasoning_effort"),
        ({"messages": USER, "reasoning_effort": ["low"]}, "reasoning_effort"),
        ({"messages": USER, "reasoning_effort": {}}, "reasoning_effort"),
        ({"messages": USER, "n": 2}, "n"),
        ({"messages": USER, "top_logprobs": 21}, "top_logprobs"),
        ({"messages": USER, "logit_bias": {"1": 500}}, "logit_bias"),
        ({"messages": USER, "max_completion_tokens": 0}, "max_completion_tokens"),
        ({"messages": USER, "lynx": {"answer_reserve": 0}}, "lynx.answer_reserve"),
        ({"messages": USER, "lynx": {"exit": "sometimes"}}, "lynx.exit"),
        ({"messages": USER, "response_format": {"type": "xml"}}, "response_format.type"),
        ({"messages": USER, "stream_options": "yes"}, "stream_options"),
        ({"messages": USER, "model": 7}, "model"),
        ({"messages": USER, "tools": [{"type": "function"}]}, "tools"),
        ({"messages": USER, "tool_choice": "auto"}, "tool_choice"),
        ({"messages": USER, "audio": {"voice": "x"}}, "audio"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
    ],
)
def test_bad_requests_name_the_field(body: object, param: str) -> None:
    """Each bad value is a 400 naming the request's own parameter (ranges checked once, by
    the options' schema)."""
    with pytest.raises(ApiError) as info:
        parse_request(body).options()
    assert info.value.status == 400 and info.value.param == param, info.value.message
    assert info.value.body()["error"]["type"] == "invalid_request_error"


def test_unknown_fields_are_accepted_and_ignored() -> None:
    r = parse_request({"messages": USER, "frequency_penality": 1, "x-trace": {"a": 1}})
    assert r.chat() == USER


def test_random_bodies_never_escape_as_anything_but_an_api_error() -> None:
    """A seeded fuzz of the schema: any JSON value in any field is a request or a 400."""
    import random

    rng = random.Random(0)
    values = [None, True, 0, -1, 1.5, 10**9, "", "x", [], [1], {}, {"a": 1}, [{"role": "user"}], "🙂" * 3]
    fields = [*ChatRequest.model_fields, *UNSUPPORTED, "user"]  # every field it reads, rejects or ignores
    for _ in range(500):
        body = {"messages": USER}
        for field in rng.sample(fields, rng.randint(1, 4)):
            body[field] = rng.choice(values)
        try:
            parse_request(json.loads(json.dumps(body))).options()
        except ApiError as exc:
            assert exc.status == 400
        except Exception as exc:  # noqa: BLE001 - must be a user error with one line, never a crash
            from lynx_edge.errors import LynxError

            assert isinstance(exc, LynxError), (body, exc)


def test_stop_strings_never_leak_across_chunks() -> None:
    f = StopFilter(["</s>", "STOP"])
    out = f.feed("The answer ") + f.feed("is 4 <") + f.feed("/s") + f.feed("> and more")
    assert out == "The answer is 4 " and f.stopped
    g = StopFilter(["STOP"])
    assert g.feed("ST") == "" and g.feed("ART") == "START" and g.flush() == ""
    assert StopFilter(["x"]).flush() == ""
