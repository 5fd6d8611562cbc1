"""Tool calls through the server, driven by the official ``openai`` client and LangChain's
``bind_tools`` against the live server on the embedded reasoner: a forced call parses and
validates against its schema, the call → result → answer loop completes, calls stream as
OpenAI deltas."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import jsonschema
import ollama
import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from live import KEY, MODEL

pytestmark = pytest.mark.clients

CALCULATOR, LOOKUP = json.loads((Path(__file__).resolve().parents[2] / "data/tools/calculator-lookup.json").read_text())
ASK = [{"role": "user", "content": "What is 8 * 23? Use the calculator."}]
GREEDY = {"temperature": 0, "max_tokens": 300}


@pytest.fixture
def oai(server: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server['base']}/v1", api_key=KEY, max_retries=0)


def schema_of(name: str) -> dict:
    return {t["function"]["name"]: t["function"]["parameters"] for t in (CALCULATOR, LOOKUP)}[name]


def test_a_required_call_comes_back_as_tool_calls_that_validate(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL, messages=ASK, tools=[CALCULATOR, LOOKUP], tool_choice="required", **GREEDY
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), schema_of(call.function.name))
    lynx = reply.model_extra["lynx"]  # the card was calibrated on free answers: tools make it an estimate
    assert not lynx["guarantee"] and any("tool(s) the model may call" in why for why in lynx["estimate_because"])


def test_a_named_tool_choice_calls_that_tool(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[CALCULATOR, LOOKUP],
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        parallel_tool_calls=False,
        **GREEDY,
    )
    calls = reply.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["lookup"]
    jsonschema.validate(json.loads(calls[0].function.arguments), schema_of("lookup"))


def test_tool_choice_none_answers_in_text(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=MODEL, messages=ASK, tools=[CALCULATOR], tool_choice="none", **GREEDY)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert not reply.choices[0].message.tool_calls
    assert reply.choices[0].message.content


def test_the_call_result_answer_loop_completes(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(
        model=MODEL, messages=ASK, tools=[CALCULATOR], tool_choice="required", parallel_tool_calls=False, **GREEDY
    )
    call = first.choices[0].message.tool_calls[0]
    history = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True, include={"role", "content", "tool_calls"}),
        {"role": "tool", "tool_call_id": call.id, "content": "184"},
    ]
    final = oai.chat.completions.create(model=MODEL, messages=history, tools=[CALCULATOR], **GREEDY)
    message = final.choices[0].message
    assert final.choices[0].finish_reason in ("stop", "tool_calls")
    assert message.content or message.tool_calls


def test_streamed_calls_arrive_as_openai_deltas(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(
        model=MODEL, messages=ASK, tools=[CALCULATOR], tool_choice="required", **GREEDY
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "calculator"
    jsonschema.validate(json.loads(choice.message.tool_calls[0].function.arguments), schema_of("calculator"))


def test_langchain_bind_tools_runs_the_two_step_loop(server: dict) -> None:
    @tool
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression such as 8 * 23."""
        return "184"

    llm = ChatOpenAI(
        model=MODEL, base_url=f"{server['base']}/v1", api_key=KEY, temperature=0, max_tokens=300, max_retries=0
    )
    bound = llm.bind_tools([calculator], tool_choice="calculator")
    question = HumanMessage("What is 8 * 23? Use the calculator.")
    first = bound.invoke([question])
    assert first.tool_calls and first.tool_calls[0]["name"] == "calculator"
    call = first.tool_calls[0]
    result = ToolMessage(calculator.invoke(call["args"]), tool_call_id=call["id"])
    final = llm.bind_tools([calculator]).invoke([question, first, result])
    assert final.content or final.tool_calls


def test_a_bad_tool_choice_is_a_400_naming_it(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=[CALCULATOR],
            tool_choice={"type": "function", "function": {"name": "weather"}},
            **GREEDY,
        )
    assert "tool_choice" in str(caught.value) and "calculator" in str(caught.value)


# ---- the other doors --------------------------------------------------------------------

CLAUDE_TOOL = {
    "name": "calculator",
    "description": CALCULATOR["function"]["description"],
    "input_schema": CALCULATOR["function"]["parameters"],
}
RESPONSES_TOOL = {"type": "function", **CALCULATOR["function"]}


@pytest.fixture
def claude(server: dict) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server["base"], api_key=KEY, max_retries=0)


def test_anthropic_tool_use_then_tool_result_completes(claude: anthropic.Anthropic) -> None:
    first = claude.messages.create(
        model=MODEL,
        max_tokens=300,
        messages=ASK,
        tools=[CLAUDE_TOOL],
        tool_choice={"type": "tool", "name": "calculator", "disable_parallel_tool_use": True},
    )
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "calculator"
    jsonschema.validate(uses[0].input, schema_of("calculator"))
    final = claude.messages.create(
        model=MODEL,
        max_tokens=300,
        tools=[CLAUDE_TOOL],
        messages=[
            *ASK,
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content if b.type != "thinking"],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "184"}]},
        ],
    )
    assert final.stop_reason in ("end_turn", "tool_use", "max_tokens")
    assert final.content


def test_anthropic_streams_a_tool_use_block(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=MODEL, max_tokens=300, messages=ASK, tools=[CLAUDE_TOOL], tool_choice={"type": "any"}
    ) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and uses
    jsonschema.validate(uses[0].input, schema_of("calculator"))


def test_anthropic_counts_the_tools_into_the_prompt(claude: anthropic.Anthropic) -> None:
    bare = claude.messages.count_tokens(model=MODEL, messages=ASK).input_tokens
    with_tools = claude.messages.count_tokens(model=MODEL, messages=ASK, tools=[CLAUDE_TOOL]).input_tokens
    assert with_tools > bare


def test_responses_function_call_then_output_completes(oai: openai.OpenAI) -> None:
    first = oai.responses.create(
        model=MODEL,
        input=ASK[0]["content"],
        tools=[RESPONSES_TOOL],
        tool_choice={"type": "function", "name": "calculator"},
        parallel_tool_calls=False,
        temperature=0,
        max_output_tokens=300,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "calculator"
    jsonschema.validate(json.loads(calls[0].arguments), schema_of("calculator"))
    final = oai.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": ASK[0]["content"]},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "calculator",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "184"},
        ],
        tools=[RESPONSES_TOOL],
        max_output_tokens=300,
    )
    assert final.status in ("completed", "incomplete") and final.output


def test_responses_streams_function_call_items(oai: openai.OpenAI) -> None:
    with oai.responses.stream(
        model=MODEL, input=ASK[0]["content"], tools=[RESPONSES_TOOL], tool_choice="required", max_output_tokens=300
    ) as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert calls and calls[0].name == "calculator"
    jsonschema.validate(json.loads(calls[0].arguments), schema_of("calculator"))


def test_ollama_reads_tools_and_tool_turns_and_lists_the_capability(server: dict) -> None:
    olla = ollama.Client(host=server["base"], headers={"Authorization": f"Bearer {KEY}"})
    assert "tools" in olla.show(MODEL).capabilities
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "calculator", "arguments": {"expression": "8 * 23"}}}],
        },
        {"role": "tool", "content": "184", "tool_name": "calculator"},
    ]
    reply = olla.chat(model=MODEL, messages=history, tools=[CALCULATOR], options={"temperature": 0, "num_predict": 300})
    assert reply.done and (reply.message.content or reply.message.tool_calls)
    for call in reply.message.tool_calls or []:
        jsonschema.validate(call.function.arguments, schema_of(call.function.name))
