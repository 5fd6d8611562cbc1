"""Tool calls in a generation: a call the model begins inside its thinking is taken out of the
thinking and written as a proper call (a scripted tiny model on the DeepSeek-R1-distill
tokenizer and template); tool turns render through the real templates; on the embedded
reasoner a forced call validates against its schema and never streams as answer text."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from tiny_models import build_scripted_qwen2

from lynx_edge import Engine
from lynx_edge.errors import SettingError
from lynx_edge.events import AnswerDelta, Done, ThinkingDelta, ToolCall
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.runtime.tool_calls import DEEPSEEK, DEEPSEEK_CALLS, HERMES

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"enum": ["Paris"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
CALCULATOR = {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression such as 8 * 23.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
}
# thinking that opens a Hermes-form call before it ever closes ("<tool_call>" is one token of
# this vocabulary; DeepSeek's tool markers are not, and a script needs single tokens)
CALL_IN_THINKING = ["\n", "Okay", ",", " I", " call", "<tool_call>", " maybe", "<｜end▁of▁sentence｜>"]
# a minimal template of the Hermes family, written for this test (a model's own would do the same)
HERMES_TEMPLATE = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "{% if tools %}Tools: {{ tools | tojson }}. Call one as <tool_call>{...}</tool_call>.\n{% endif %}"
    "assistant: <think>\n"
)


def run(engine: Engine, messages, **options) -> tuple[list, Done]:
    events = list(engine.generate(messages, GenerationOptions(temperature=0, seed=0, **options)))
    return events, events[-1]


@pytest.fixture(scope="module")
def caller(tmp_path_factory: pytest.TempPathFactory):
    path = build_scripted_qwen2(
        tmp_path_factory.mktemp("models") / "tiny-caller.gguf", CALL_IN_THINKING, chat_template=HERMES_TEMPLATE
    )
    engine = Engine(path, probe=None, n_ctx=512)
    assert engine.tool_format is HERMES
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def r1(tiny_r1: Path):
    engine = Engine(tiny_r1, probe=None, n_ctx=512)
    assert engine.tool_format is DEEPSEEK
    yield engine
    engine.close()


def test_a_call_begun_in_the_thinking_comes_out_as_a_call(caller: Engine) -> None:
    events, done = run(caller, "Weather in Paris?", tools=[WEATHER], parallel_tool_calls=False, max_tokens=200)
    result = done.result
    assert result.tool_calls == (ToolCall("get_weather", {"city": "Paris"}, result.tool_calls[0].id),)
    assert result.tool_call_in_thinking
    assert result.finish_reason == "tool_calls"
    assert result.thinking.endswith("I call")  # the thinking ends where the call began
    streamed = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert "<tool_call>" not in streamed
    assert not [e for e in events if isinstance(e, AnswerDelta)]  # the call is no answer text


def test_without_tools_the_same_thinking_is_left_alone(caller: Engine) -> None:
    _, done = run(caller, "Weather in Paris?", max_tokens=40)
    assert not done.result.tool_calls and not done.result.tool_call_in_thinking


def test_a_forced_call_on_the_r1_tokenizer_is_written_in_deepseeks_tool_tokens(r1: Engine) -> None:
    _, done = run(r1, "Weather in Paris?", tools=[WEATHER], tool_choice="get_weather", parallel_tool_calls=False)
    assert [(c.name, c.arguments) for c in done.result.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert DEEPSEEK_CALLS[0] in "".join(r1.token_texts(done.result.token_ids))


def test_tool_turns_render_through_the_r1_template(r1: Engine) -> None:
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    text = r1.render_prompt(history)
    assert "get_weather" in text and '{"city": "Paris"}' in text and "sunny, 21 C" in text


def test_a_boxed_exit_with_tools_is_refused(caller: Engine) -> None:
    with pytest.raises(SettingError, match="exit_style"):
        caller.plan("Weather?", GenerationOptions(tools=[WEATHER], exit_style="boxed"))


@pytest.fixture(scope="module")
def reasoner():
    engine = Engine(n_ctx=2048)
    yield engine
    engine.close()


def test_the_embedded_reasoner_learns_the_generic_form_from_its_system_message(reasoner: Engine) -> None:
    text = reasoner.render_prompt(
        [
            {"role": "user", "content": "What is 8 * 23?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "function": {"name": "calculator", "arguments": '{"expression": "8 * 23"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "184"},
        ],
        tools=[GenerationOptions(tools=[CALCULATOR]).tools[0]],
    )
    assert "You may call these tools" in text and '"calculator"' in text
    assert '<tool_call>\n{"name": "calculator", "arguments": {"expression": "8 * 23"}}\n</tool_call>' in text
    assert "<tool_response>\n184\n</tool_response>" in text


@pytest.mark.parametrize("choice", ["required", "calculator"])
def test_a_forced_call_on_the_reasoner_validates_and_never_streams_as_text(reasoner: Engine, choice: str) -> None:
    events, done = run(reasoner, "What is 8 * 23?", tools=[CALCULATOR], tool_choice=choice, max_tokens=300)
    calls = done.result.tool_calls
    assert calls and all(c.name == "calculator" for c in calls)
    for call in calls:
        jsonschema.validate(call.arguments, CALCULATOR["parameters"])
    assert done.result.finish_reason == "tool_calls"
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == done.result.answer == ""
    assert json.dumps(calls[0].arguments)  # plain JSON, ready for the wire


def test_a_calls_strings_hold_no_raw_line_breaks(reasoner: Engine) -> None:
    """JSON forbids raw control characters in strings; without that rule a small model's
    argument runs on over new lines until the token limit."""
    import llama_cpp.llama_cpp as L

    from lynx_edge.runtime.llama_backend import tool_call_grammar

    b = reasoner.backend
    grammar = b.grammar(tool_call_grammar(GenerationOptions(tools=[CALCULATOR]).tools, reasoner.tool_format))
    for token in b.tokenize('<tool_call>\n{"name": "calculator", "arguments": {"expression": "'):
        L.llama_sampler_accept(grammar._sampler, token)
    newline, digit = b.tokenize("\n")[0], b.tokenize("8")[0]
    assert not b._allows(grammar, newline, 0.0) and b._allows(grammar, digit, 0.0)


def test_a_call_that_would_not_end_is_shut_before_the_token_limit(reasoner: Engine) -> None:
    """However long an argument's string runs on (here the limit leaves little room), the call
    is nudged shut in time and still validates."""
    for question in ("What is 8 * 23?", "Sum 17 and 25, then double it.", "Name a number."):
        _, done = run(reasoner, question, tools=[CALCULATOR], tool_choice="calculator", max_tokens=90, think=False)
        calls = done.result.tool_calls
        assert calls, done.result.finish_reason
        for call in calls:
            jsonschema.validate(call.arguments, CALCULATOR["parameters"])
