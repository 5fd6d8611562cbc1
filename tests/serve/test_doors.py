"""The Ollama, Anthropic Messages and OpenAI Responses doors, each driven by its official client
against the live server on the embedded reasoner (and raw HTTP for what clients never send)."""

from __future__ import annotations

import contextlib
import json
import time

import anthropic
import httpx
import ollama
import openai
import pytest
from live import KEY, MODEL, ORIGIN, QUESTION, SCHEMA

pytestmark = pytest.mark.clients
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def olla(server: dict) -> ollama.Client:
    return ollama.Client(host=server["base"], headers=AUTH)


@pytest.fixture
def claude(server: dict) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server["base"], api_key=KEY, max_retries=0)


@pytest.fixture
def oai(server: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server['base']}/v1", api_key=KEY, max_retries=0)


def raw(server: dict, path: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(f"{server['base']}{path}", json=body, headers={**AUTH, **headers}, timeout=120)


USER = [{"role": "user", "content": QUESTION}]


def served_level(server: dict, asked: float) -> float:
    """The level the shipped card serves for ``asked``: its largest calibrated one at or below."""
    return max(level for level in server["engine"].levels("per-answer") if level <= asked)


GREEDY = {"temperature": 0, "num_predict": 300}


# ---- Ollama ------------------------------------------------------------------------------


def test_ollama_lists_shows_and_reports_the_served_model(olla: ollama.Client) -> None:
    [listed] = olla.list().models
    assert listed.model == f"{MODEL}:latest" and listed.details.format == "gguf" and listed.size > 0
    assert listed.details.quantization_level == "Q8_0" and listed.details.parameter_size.endswith("M")
    shown = olla.show(f"{MODEL}:latest")
    assert {"completion", "thinking"} <= set(shown.capabilities) and shown.template
    assert shown.modelinfo["general.architecture"] == "llama"
    [running] = olla.ps().models
    assert running.model == listed.model and running.context_length == 2048


def test_ollama_chat_with_think_separates_thinking_and_answer(olla: ollama.Client) -> None:
    reply = olla.chat(model=MODEL, messages=USER, think=True, stream=False, options=GREEDY)
    assert reply.message.thinking and "16" in reply.message.content
    assert reply.done and reply.done_reason == "stop"
    assert reply.eval_count > 0 and reply.prompt_eval_count > 0
    assert reply.total_duration >= reply.eval_duration > 0


def test_ollama_chat_without_think_skips_the_thinking(olla: ollama.Client) -> None:
    reply = olla.chat(model=MODEL, messages=USER, think=False, options=GREEDY)
    assert not reply.message.thinking and reply.message.content


def test_ollama_chat_streams_thinking_then_answer_then_done(olla: ollama.Client) -> None:
    thinking, content, last = [], [], None
    for part in olla.chat(model=MODEL, messages=USER, think=True, stream=True, options=GREEDY):
        if part.message.thinking:
            assert not content, "thinking arrives before the answer"
            thinking.append(part.message.thinking)
        if part.message.content:
            content.append(part.message.content)
        last = part
    assert thinking and "16" in "".join(content)
    assert last.done and last.done_reason == "stop" and last.eval_count > 0


def test_ollama_format_schema_gives_valid_json(olla: ollama.Client) -> None:
    reply = olla.chat(model=MODEL, messages=USER, format=SCHEMA, options=GREEDY)
    assert isinstance(json.loads(reply.message.content)["answer"], int)


def test_ollama_generate_answers_a_prompt(olla: ollama.Client) -> None:
    reply = olla.generate(model=MODEL, prompt=QUESTION, think=True, options=GREEDY)
    assert reply.thinking and "16" in reply.response and reply.done_reason == "stop"
    parts = list(olla.generate(model=MODEL, prompt=QUESTION, stream=True, options=GREEDY))
    assert "16" in "".join(p.response for p in parts) and parts[-1].done


def test_ollama_think_levels_pick_the_risk_level_and_stats_ride_along(server: dict) -> None:
    body = {"model": MODEL, "messages": USER, "think": "low", "stream": False, "options": GREEDY}
    reply = raw(server, "/api/chat", body).json()
    # "low" asks for α 0.2; the card serves its largest calibrated level at or below it
    assert reply["lynx"]["alpha"] == served_level(server, 0.2) and reply["lynx"]["policy"]


def test_ollama_load_requests_answer_at_once(olla: ollama.Client) -> None:
    assert olla.generate(model=MODEL).done_reason == "load"
    assert olla.chat(model=MODEL, messages=[]).done_reason == "load"


def test_ollama_curl_style_form_bodies_are_read(server: dict) -> None:
    """Ollama's docs use ``curl -d``: a form-typed body from a client without an Origin."""
    body = json.dumps({"model": MODEL, "prompt": QUESTION, "stream": False, "options": GREEDY})
    reply = httpx.post(
        f"{server['base']}/api/generate",
        content=body,
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        timeout=120,
    )
    assert reply.status_code == 200 and "16" in reply.json()["response"]
    from_a_page = httpx.post(
        f"{server['base']}/api/generate",
        content=body,
        headers={**AUTH, "Content-Type": "text/plain", "Origin": "https://evil.example"},
    )
    assert from_a_page.status_code == 403 and "may not call this server" in from_a_page.json()["error"]
    from_a_local_page = httpx.post(
        f"{server['base']}/api/generate",
        content=body,
        headers={**AUTH, "Content-Type": "text/plain", "Origin": ORIGIN},
    )
    assert from_a_local_page.status_code == 415 and "application/json" in from_a_local_page.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"model": "llama3:8b", "messages": USER}, 404, "llama3:8b"),
        ({"model": MODEL, "messages": USER, "options": {"mirostat": 2}}, 400, "options.mirostat"),
        ({"model": MODEL, "messages": USER, "options": {"num_ctx": 100000}}, 400, "options.num_ctx"),
        ({"model": MODEL, "messages": USER, "options": {"temperature": 9}}, 400, "options.temperature"),
        ({"model": MODEL, "messages": USER, "options": {"bogus": 1}}, 400, "options.bogus"),
        ({"model": MODEL, "messages": USER, "think": "extreme"}, 400, "think"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}, 400, "images"),
        ({"model": MODEL, "messages": USER, "tools": [{"type": "function"}]}, 400, "tools"),
    ],
)
def test_ollama_errors_come_in_ollamas_shape(olla: ollama.Client, body: dict, status: int, named: str) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        olla.chat(**body)
    assert info.value.status_code == status and named in info.value.error


# ---- Anthropic Messages ------------------------------------------------------------------


def test_anthropic_without_thinking_answers_in_one_text_block(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=300, messages=USER)
    assert [b.type for b in message.content] == ["text"] and "16" in message.content[0].text
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    counted = claude.messages.count_tokens(model=MODEL, messages=USER)
    assert counted.input_tokens == message.usage.input_tokens


def test_anthropic_thinking_comes_as_a_thinking_block_within_its_budget(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=MODEL,
        max_tokens=300,
        thinking={"type": "enabled", "budget_tokens": 40},
        messages=USER,
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking and message.content[1].text
    assert message.usage.output_tokens < 300


def test_anthropic_stream_sends_a_thinking_block_then_a_text_block(claude: anthropic.Anthropic) -> None:
    kinds = []
    with claude.messages.stream(
        model=MODEL, max_tokens=300, thinking={"type": "enabled", "budget_tokens": 1024}, messages=USER
    ) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert [b.type for b in final.content] == ["thinking", "text"] and "16" in final.content[1].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_anthropic_stream_pings_while_the_thinking_runs_unseen(server: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """No thinking asked for: the thinking still runs, unseen, and the stream says it is alive
    with ``ping`` events meanwhile (here every piece of thinking; by default every 5 s)."""
    monkeypatch.setattr("lynx_edge.serve.anthropic_messages.PING_SECONDS", 0.0)
    body = {"model": MODEL, "max_tokens": 300, "messages": USER, "stream": True}
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    events, data = [], []
    with httpx.stream("POST", f"{server['base']}/v1/messages", json=body, headers=headers, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            elif line.startswith("data: "):
                data.append(json.loads(line.removeprefix("data: ")))
    first_block = events.index("content_block_start")
    assert events.count("ping") > 1 and "ping" in events[2:first_block]  # beyond the opening ping
    blocks = [d["content_block"]["type"] for d in data if d["type"] == "content_block_start"]
    text = "".join(d["delta"].get("text", "") for d in data if d["type"] == "content_block_delta")
    assert blocks == ["text"] and "16" in text and events[-1] == "message_stop"


def test_anthropic_disabled_thinking_and_stop_sequences(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=MODEL,
        max_tokens=300,
        thinking={"type": "disabled"},
        messages=USER,
        extra_body={"lynx": {"measure_savings": False}},
    )
    assert message.model_extra["lynx"]["exited"] is False and message.content[-1].text
    words = message.content[-1].text.split()
    assert len(words) > 1
    stopped = claude.messages.create(
        model=MODEL,
        max_tokens=300,
        thinking={"type": "disabled"},
        messages=USER,
        stop_sequences=[words[1]],
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == words[1]
    assert words[1] not in stopped.content[-1].text


def test_anthropic_effort_and_output_format(claude: anthropic.Anthropic, server: dict) -> None:
    message = claude.messages.create(
        model=MODEL,
        max_tokens=300,
        messages=USER,
        output_config={"effort": "low", "format": {"type": "json_schema", "schema": SCHEMA}},
    )
    assert isinstance(json.loads(message.content[0].text)["answer"], int)
    assert message.model_extra["lynx"]["alpha"] == served_level(server, 0.2)  # "low" asks for α 0.2


def test_anthropic_errors_come_in_anthropics_shape(claude: anthropic.Anthropic, server: dict) -> None:
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=USER)
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model=MODEL, max_tokens=100, messages=USER, tools=[{"type": "web_search_20250305", "name": "web_search"}]
        )
    assert "tools" in str(info.value)
    missing = raw(server, "/v1/messages", {"model": MODEL, "messages": USER})
    assert missing.status_code == 400 and missing.json()["type"] == "error"
    assert missing.json()["error"] == {"type": "invalid_request_error", "message": "'max_tokens': Field required"}
    keyless = httpx.post(f"{server['base']}/v1/messages", json={}, headers={"x-api-key": "wrong"})
    assert keyless.status_code == 401 and keyless.json()["error"]["type"] == "authentication_error"


# ---- OpenAI Responses --------------------------------------------------------------------


def test_responses_gives_a_reasoning_item_and_output_text(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model=MODEL, input=QUESTION, max_output_tokens=300, temperature=0)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text and "16" in response.output_text
    assert response.status == "completed" and response.usage.output_tokens_details.reasoning_tokens > 0


def test_responses_stream_events_in_order(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model=MODEL, input=USER, max_output_tokens=300, temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert kinds.index("response.reasoning_text.delta") < kinds.index("response.output_text.delta")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "16" in text and events[-1].response.output_text == text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_responses_stream_helper_accumulates_the_response(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model=MODEL, input=QUESTION, max_output_tokens=300, temperature=0) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert "16" in final.output_text


def test_responses_reasoning_summary_when_asked_and_only_then(oai: openai.OpenAI) -> None:
    """Apps that show only summaries (LangChain's Responses path, Codex-style UIs) get one:
    detailed/auto the whole thinking, concise its last paragraph; none unless asked for."""
    plain = oai.responses.create(model=MODEL, input=QUESTION, max_output_tokens=300)
    assert plain.output[0].summary == []
    detailed = oai.responses.create(
        model=MODEL, input=QUESTION, max_output_tokens=300, reasoning={"effort": "medium", "summary": "detailed"}
    )
    thinking = detailed.output[0].content[0].text
    assert [p.type for p in detailed.output[0].summary] == ["summary_text"]
    assert detailed.output[0].summary[0].text == thinking.strip() and detailed.reasoning.summary == "detailed"
    with oai.responses.stream(
        model=MODEL, input=QUESTION, max_output_tokens=300, reasoning={"summary": "concise"}
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    concise = final.output[0].summary[0].text
    assert concise and concise in final.output[0].content[0].text
    done = [e for e in events if e.type == "response.reasoning_summary_text.done"]
    assert [e.text for e in done] == [concise] and "16" in final.output_text


def test_responses_json_schema_format(oai: openai.OpenAI) -> None:
    response = oai.responses.create(
        model=MODEL,
        input=QUESTION,
        max_output_tokens=300,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}},
    )
    assert isinstance(json.loads(response.output_text)["answer"], int)


def test_responses_effort_none_skips_the_reasoning(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model=MODEL, input=QUESTION, max_output_tokens=200, reasoning={"effort": "none"})
    assert [item.type for item in response.output] == ["message"]


def test_responses_keeps_no_state_and_says_so(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model=MODEL, input="and then?", previous_response_id="resp_123")
    assert info.value.body["param"] == "previous_response_id" and "whole conversation" in info.value.message


# ---- what every door guarantees ----------------------------------------------------------

LONG = [{"role": "user", "content": "Write a long story about a cat."}]
ENDLESS = {
    "/v1/responses": {"input": LONG, "max_output_tokens": 100000, "lynx": {"enabled": False}},
    "/v1/messages": {"model": MODEL, "messages": LONG, "max_tokens": 100000, "lynx": {"enabled": False}},
    "/api/chat": {"model": MODEL, "messages": LONG, "stream": False, "lynx": {"enabled": False}},
    "/api/generate": {"model": MODEL, "prompt": LONG[0]["content"], "lynx": {"enabled": False}},
}


@pytest.mark.parametrize("path", list(ENDLESS))
def test_every_door_stops_the_generation_of_a_client_that_left(server: dict, path: str) -> None:
    """Streaming (generate: it leaves after three lines) or not (it times out after a second),
    a client that goes away leaves no work behind."""
    stopped = server["app"].state.batcher.stopped
    with contextlib.suppress(httpx.TimeoutException):
        with httpx.stream("POST", f"{server['base']}{path}", json=ENDLESS[path], headers=AUTH, timeout=1.0) as reply:
            for seen, _ in enumerate(reply.iter_lines()):
                if seen == 3:
                    break
            else:
                pytest.fail("the reply ended by itself")
    batcher = server["app"].state.batcher
    deadline = time.monotonic() + 120  # however long a loaded machine takes to reach the next token
    while batcher.pending and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batcher.pending == 0 and batcher.stopped == stopped + 1  # stopped, not run to its end


@pytest.mark.parametrize(
    ("path", "error_of"),
    [
        ("/v1/responses", lambda body: body["error"]["message"]),
        ("/v1/messages", lambda body: body["error"]["message"]),
        ("/api/chat", lambda body: body["error"]),
    ],
)
def test_every_door_checks_the_key_and_the_content_type_in_its_own_shape(server: dict, path: str, error_of) -> None:  # noqa: ANN001
    keyless = httpx.post(f"{server['base']}{path}", json=ENDLESS[path])
    assert keyless.status_code == 401 and "API key" in error_of(keyless.json())
    typed = httpx.post(  # a "simple" request from an allowed page: no preflight, so the type is checked
        f"{server['base']}{path}",
        content=json.dumps(ENDLESS[path]),
        headers={**AUTH, "Content-Type": "text/plain", "Origin": ORIGIN},
    )
    assert typed.status_code == 415 and "application/json" in error_of(typed.json())
    foreign = httpx.post(
        f"{server['base']}{path}",
        content=json.dumps(ENDLESS[path]),
        headers={**AUTH, "Content-Type": "text/plain", "Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403 and "may not call this server" in error_of(foreign.json())
