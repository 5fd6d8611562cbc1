"""The chat-completions wire format without a server: validation and stop strings."""

from __future__ import annotations

import pytest

from lynx_edge.openai_api import ApiError, StopFilter, parse_request

USER = [{"role": "user", "content": "hi"}]


def test_a_full_request_maps_to_engine_settings() -> None:
    r = parse_request({
        "model": "m", "messages": [{"role": "developer", "content": "be brief"},
                                   {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "temperature": 0, "top_p": 0.9, "max_completion_tokens": 50, "seed": 3, "stop": "END",
        "stream": True, "stream_options": {"include_usage": True}, "lynx": {"enabled": False, "alpha": 0.2},
    })
    assert r.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (r.temperature, r.top_p, r.max_tokens, r.seed, r.stop) == (0.0, 0.9, 50, 3, ["END"])
    assert r.stream and r.include_usage and not r.lynx and r.alpha == 0.2


def test_reasoning_effort_maps_to_alpha_unless_alpha_is_given() -> None:
    assert parse_request({"messages": USER, "reasoning_effort": "low"}).alpha == 0.2
    assert parse_request({"messages": USER, "reasoning_effort": "high"}).alpha == 0.05
    assert parse_request({"messages": USER, "reasoning_effort": "low", "lynx": {"alpha": 0.1}}).alpha == 0.1


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
        ({"messages": USER, "reasoning_effort": "max"}, "reasoning_effort"),
        ({"messages": USER, "n": 2}, "n"),
    ],
)
def test_bad_requests_name_the_field(body: object, param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_request(body)
    assert info.value.status == 400 and info.value.param == param
    assert info.value.body()["error"]["type"] == "invalid_request_error"


def test_stop_strings_never_leak_across_chunks() -> None:
    f = StopFilter(["</s>", "STOP"])
    out = f.feed("The answer ") + f.feed("is 4 <") + f.feed("/s") + f.feed("> and more")
    assert out == "The answer is 4 " and f.stopped
    g = StopFilter(["STOP"])
    assert g.feed("ST") == "" and g.feed("ART") == "START" and g.flush() == ""
    assert StopFilter(["x"]).flush() == ""
