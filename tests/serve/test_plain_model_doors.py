"""A model that does not think, through every door: its whole reply is the content, Ollama's
``show`` omits the thinking capability and ``think: true`` gets Ollama's own error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from helpers import PLAIN_ANSWER as ANSWER
from helpers import PLAIN_QUESTION as QUESTION
from live import serving

from lynx_edge import Engine
from lynx_edge.serve.app import ServerSettings, create_app

MODEL = "tiny-qwen2.5-instruct"  # the file's stem: the name the server serves it under
ASK = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def base(plain_model: Path) -> Iterator[str]:
    engine = Engine(plain_model, n_ctx=512)
    with serving(create_app(engine, ServerSettings())) as url:
        yield url
    engine.close()


def test_openai_chat_and_responses_give_the_whole_reply_as_content(base: str) -> None:
    oai = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
    chat = oai.chat.completions.create(model=MODEL, messages=ASK, temperature=0)
    message = chat.choices[0].message
    assert message.content == ANSWER and not (message.model_extra or {}).get("reasoning_content")
    assert chat.usage.completion_tokens_details.reasoning_tokens == 0
    assert chat.model_extra["lynx"]["policy"] == "none (this model does not think: no early exit)"
    response = oai.responses.create(model=MODEL, input=QUESTION, temperature=0)
    assert response.output_text == ANSWER and [i.type for i in response.output] == ["message"]


def test_anthropic_gives_one_text_block(base: str) -> None:
    body = {"model": MODEL, "max_tokens": 64, "messages": ASK, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    message = httpx.post(f"{base}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}).json()
    assert [b["type"] for b in message["content"]] == ["text"] and message["content"][0]["text"] == ANSWER


def test_ollama_shows_no_thinking_and_refuses_think_as_ollama_does(base: str) -> None:
    olla = ollama.Client(host=base)
    shown = olla.show(MODEL)
    assert "thinking" not in shown.capabilities and "completion" in shown.capabilities
    reply = olla.chat(model=MODEL, messages=ASK)
    assert reply.message.content == ANSWER and not reply.message.thinking
    with pytest.raises(ollama.ResponseError) as refused:
        olla.chat(model=MODEL, messages=ASK, think=True)
    assert refused.value.status_code == 400 and refused.value.error == f'"{MODEL}" does not support thinking'
