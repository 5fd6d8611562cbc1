"""Tool-call formats: which family a template speaks, and reading calls back from an answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf import GGUFReader

from lynx_edge.runtime.tool_calls import (
    DEEPSEEK,
    FORMATS,
    GENERIC,
    HERMES,
    LLAMA3,
    LLAMA3_TAGGED,
    MISTRAL,
    format_for,
    generic_instructions,
)

R1_VOCAB = Path(__file__).resolve().parents[1] / "fixtures/deepseek-r1-distill-qwen.vocab.gguf"
ARGS = {"expression": "8 * 23", "note": "a {brace} and ünïcode"}


def template_of(path: Path) -> str:
    field = GGUFReader(path).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode()


def test_the_r1_distill_template_speaks_deepseeks_tool_tokens() -> None:
    assert format_for(template_of(R1_VOCAB)) is DEEPSEEK


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("{% for tool in tools %}<tools>{{ tool }}</tools>{% endfor %}<tool_call>", HERMES),
        ("{{ '[AVAILABLE_TOOLS]' }}{{ '[TOOL_CALLS]' }}", MISTRAL),
        ("<|start_header_id|>ipython{% if tools %}<|python_tag|>{% endif %}", LLAMA3_TAGGED),
        ("<|start_header_id|>user{% if tools %}{{ tools }}{% endif %}", LLAMA3),
        ("{% for message in messages %}{{ message.content }}{% endfor %}", GENERIC),
        (None, GENERIC),
    ],
)
def test_the_format_is_chosen_from_the_template(marker: str | None, expected: object) -> None:
    assert format_for(marker) is expected


@pytest.mark.parametrize("fmt", FORMATS + (LLAMA3_TAGGED,), ids=lambda f: f"{f.name}{f.opener[:3]}")
def test_a_framed_call_reads_back_as_the_same_call(fmt) -> None:  # noqa: ANN001
    """What a forced call writes (the framing around grammar-made arguments) parses back."""
    before, after = fmt.framing("calculator")
    text, calls = fmt.parse("Let me compute. " * (fmt.opener != "") + before + json.dumps(ARGS) + after)
    assert [(c.name, c.arguments) for c in calls] == [("calculator", ARGS)]
    assert text == "Let me compute. " * (fmt.opener != "")
    assert calls[0].id.startswith("call_")


def test_models_own_spellings_parse() -> None:
    hermes = (
        '<tool_call>\n{"name": "lookup", "arguments": {"name": "Elena"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "calculator", "arguments": "{\\"expression\\": \\"1+1\\"}"}\n</tool_call>'
    )
    assert [(c.name, c.arguments) for c in HERMES.parse(hermes)[1]] == [
        ("lookup", {"name": "Elena"}),
        ("calculator", {"expression": "1+1"}),
    ]
    deepseek = (
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>lookup\n```json\n"
        '{"name": "Elena"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>calculator\n'
        '```json\n{"expression": "2*3"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    )
    assert [c.name for c in DEEPSEEK.parse(deepseek)[1]] == ["lookup", "calculator"]
    mistral = (
        '[TOOL_CALLS][{"name": "lookup", "arguments": {"name": "Elena"}}, '
        '{"name": "calculator", "arguments": {"expression": "3"}}]'
    )
    assert [c.name for c in MISTRAL.parse(mistral)[1]] == ["lookup", "calculator"]
    llama = '{"name": "lookup", "parameters": {"name": "Elena"}}'
    assert LLAMA3.parse(llama)[1][0].arguments == {"name": "Elena"}


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 16.",
        "<tool_call>\nnot json\n</tool_call>",
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": "f", "arguments": [1]}</tool_call>',  # arguments not an object
    ],
)
def test_text_that_is_no_well_formed_call_stays_the_answer(text: str) -> None:
    assert HERMES.parse(text) == (text, [])


def test_the_generic_form_is_taught_in_words_the_parser_reads() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    words = generic_instructions(tools)
    assert '"name": "lookup"' in words and "<tool_call>" in words
    example = words[words.index("<tool_call>") :].split("and nothing else")[0]
    assert GENERIC.opens_at(example) == 0


def test_a_closing_tag_inside_an_argument_is_text_and_a_cut_last_call_is_left_out() -> None:
    text = (
        '<tool_call>\n{"name": "calc", "arguments": {"expression": "1 + 1 </tool_call>"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "calc", "arguments": {"expr'
    )
    before, calls = HERMES.parse(text)
    assert before == "" and [(c.name, c.arguments) for c in calls] == [("calc", {"expression": "1 + 1 </tool_call>"})]
