"""The chat-completions wire format without a server: the schema, options, stop strings."""

from __future__ import annotations

import json

import pytest

from lynx_edge.runtime.engine import answer_reserve
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.serve.openai_chat import UNSUPPORTED, ChatRequest, parse_request
from lynx_edge.serve.wire import ApiError, StopFilter

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
    def asked(**body: object) -> GenerationOptions:
        return parse_request({"messages": USER, **body}).options()

    levels = {"minimal": 0.3, "low": 0.2, "medium": 0.1, "high": 0.05, "xhigh": 0.02}
    for effort, alpha in levels.items():
        assert asked(reasoning_effort=effort).alpha == alpha
        assert asked(reasoning={"effort": effort}).alpha == alpha  # OpenRouter's spelling
    assert asked(reasoning_effort="low", lynx={"alpha": 0.1}).alpha == 0.1
    assert asked(reasoning_effort="max").exit == "none"  # the most effort: think to the end
    assert asked(reasoning_effort="none").think is False  # what apps send to turn thinking off: never an error


def test_every_thinking_dialect_is_read() -> None:
    def asked(**body: object) -> GenerationOptions:
        return parse_request({"messages": USER, **body}).options()

    for off in (
        {"chat_template_kwargs": {"enable_thinking": False, "other": 1}},
        {"thinking": {"type": "disabled"}},
        {"reasoning": {"enabled": False}},
        {"reasoning_effort": "none"},
        {"thinking_budget_tokens": 0},
        {"reasoning": {"max_tokens": 0}},
    ):
        assert asked(**off).think is False, off
    for budget in (
        {"thinking_budget_tokens": 96},
        {"reasoning_budget_tokens": 96},
        {"reasoning": {"max_tokens": 96}},
        {"thinking": {"type": "enabled", "budget_tokens": 96}},
        {"thinking_budget_tokens": 96, "reasoning_budget_tokens": 200},  # clients send several: the smallest
    ):
        o = asked(**budget)
        assert o.think and o.thinking_budget == 96, budget
    assert asked(chat_template_kwargs={"enable_thinking": True}).think
    assert asked(lynx={"loop_guard": False}).loop_guard is False and asked().loop_guard
    assert asked(lynx={"exit_style": "boxed"}).exit_style == "boxed" and asked().exit_style == "conclude"
    assert asked(reasoning={"summary": "auto", "effort": "low"}).alpha == 0.2  # unknown reasoning fields: ignored
    defaults = GenerationOptions(thinking_budget=300, loop_guard=False)
    assert parse_request({"messages": USER}).options(defaults).thinking_budget == 300
    assert parse_request({"messages": USER, "reasoning": {"max_tokens": 50}}).options(defaults).thinking_budget == 50
    assert parse_request({"messages": USER, "reasoning": {"exclude": True}}).thinking_asked().exclude


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
    assert any_object.json_schema == {"type": "object"} and answer_reserve(any_object, 300) == 64  # any limit
    assert parse_request({"messages": USER, "response_format": {"type": "text"}}).options().json_schema is None
    assert answer_reserve(o.but(max_tokens=40), 40) == 10  # a tight limit: a quarter of it
    assert answer_reserve(o.but(answer_reserve=0), 300) == 0  # asked off


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
        ({"messages": USER, "reasoning_effort": "maximal"}, "reasoning_effort"),
        ({"messages": USER, "reasoning": {"effort": "lots"}}, "reasoning.effort"),
        ({"messages": USER, "thinking_budget_tokens": -1}, "thinking_budget_tokens"),
        ({"messages": USER, "thinking": {"type": "enabled", "budget_tokens": "many"}}, "thinking.budget_tokens"),
        ({"messages": USER, "chat_template_kwargs": {"enable_thinking": "no"}}, "chat_template_kwargs.enable_thinking"),
        ({"messages": USER, "lynx": {"loop_guard": "off"}}, "lynx.loop_guard"),
        ({"messages": USER, "reasoning_effort": ["low"]}, "reasoning_effort"),
        ({"messages": USER, "reasoning_effort": {}}, "reasoning_effort"),
        ({"messages": USER, "n": 2}, "n"),
        ({"messages": USER, "top_logprobs": 21}, "top_logprobs"),
        ({"messages": USER, "logit_bias": {"1": 500}}, "logit_bias"),
        ({"messages": USER, "max_completion_tokens": 0}, "max_completion_tokens"),
        ({"messages": USER, "lynx": {"answer_reserve": -1}}, "lynx.answer_reserve"),
        ({"messages": USER, "lynx": {"exit": "sometimes"}}, "lynx.exit"),
        ({"messages": USER, "lynx": {"exit_style": "shout"}}, "lynx.exit_style"),
        ({"messages": USER, "response_format": {"type": "xml"}}, "response_format.type"),
        ({"messages": USER, "stream_options": "yes"}, "stream_options"),
        ({"messages": USER, "model": 7}, "model"),
        ({"messages": USER, "tools": [{"type": "function"}]}, "tools[0].function"),
        ({"messages": USER, "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": USER, "tool_choice": "required"}, "tool_choice"),  # and no tools
        ({"messages": USER, "tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools"),
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
    assert info.value.kind == "invalid_request_error"


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
