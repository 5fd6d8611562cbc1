"""`lynx-edge serve`'s chat-completions door against a live server on loopback, on the embedded
reasoner, driven by the official openai client (and raw HTTP for the bad requests, browsers and
disconnects)."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time

import httpx
import openai
import pytest
from live import KEY, ORIGIN, QUESTION, SCHEMA

from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.limits import CutWindow
from lynx_edge.serve.app import create_app


@pytest.fixture
def client(server: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server['base']}/v1", api_key=KEY, max_retries=0)


def post(server: dict, body: object, **headers: str) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server['base']}/v1/chat/completions",
        content=raw,
        timeout=120,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **headers},
    )


def idle(server: dict, within: float = 120) -> bool:
    """The batcher has nothing running or queued (waited for, however long a loaded machine
    takes to reach the next token; how fast is measured by the studies, not asserted here)."""
    batcher = server["app"].state.batcher
    deadline = time.monotonic() + within
    while batcher.pending and time.monotonic() < deadline:
        time.sleep(0.02)
    return batcher.pending == 0


def ask(client: openai.OpenAI, **fields: object):  # noqa: ANN201 - the openai response or stream
    """The test question to the default model, greedy; ``fields`` add to or override that."""
    request = {"model": "smollm2-135m-reasoner", "messages": [{"role": "user", "content": QUESTION}], "temperature": 0}
    return client.chat.completions.create(**{**request, **fields})


def test_non_streaming_completion_separates_reasoning_and_answer(client: openai.OpenAI) -> None:
    resp = ask(client, max_tokens=300)
    message = resp.choices[0].message
    assert message.content and "16" in message.content
    assert message.model_extra["reasoning_content"]
    assert message.model_extra["reasoning"] == message.model_extra["reasoning_content"]
    assert resp.usage.completion_tokens_details.reasoning_tokens > 0
    assert resp.usage.completion_tokens > resp.usage.completion_tokens_details.reasoning_tokens
    lynx = resp.model_extra["lynx"]
    assert set(lynx) >= {
        "exited",
        "exit_policy",
        "exit_cue",
        "exit_score",
        "threshold",
        "policy",
        "guarantee",
        "alpha",
        "trial_tokens",
        "tokens_saved",
    }


def test_streaming_sends_reasoning_then_content_then_usage(client: openai.OpenAI) -> None:
    stream = ask(
        client,
        max_tokens=300,
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning, content, finals, usage = [], [], [], None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if (delta.model_extra or {}).get("reasoning_content"):
            assert not content, "reasoning arrives before the answer"
            reasoning.append(delta.model_extra["reasoning_content"])
        if delta.content:
            content.append(delta.content)
        if chunk.choices[0].finish_reason:
            finals.append(chunk)
    assert reasoning and "16" in "".join(content)
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert "lynx" in finals[0].model_extra
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens > 0


def test_json_schema_answer_after_free_thinking(client: openai.OpenAI) -> None:
    """response_format json_schema: the thinking is free text, the answer validates."""
    resp = ask(
        client,
        max_tokens=400,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}},
    )
    message = resp.choices[0].message
    assert json.loads(message.content) == {"answer": 16}
    assert "</think>" not in message.model_extra["reasoning_content"] and message.model_extra["reasoning_content"]


def test_json_object_streams_a_parsable_answer(client: openai.OpenAI) -> None:
    stream = ask(
        client,
        max_tokens=400,
        response_format={"type": "json_object"},
        stream=True,
    )
    content = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert isinstance(json.loads(content), dict)


def test_a_tight_token_budget_still_gets_a_complete_json_answer(client: openai.OpenAI) -> None:
    """max_tokens too small for the whole thinking: the runtime closes it in time (a budget
    exit) and the answer is complete, valid JSON instead of a cut-off 'length'."""
    resp = ask(
        client,
        max_tokens=90,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}},
        extra_body={"lynx": {"enabled": False}},
    )
    assert "answer" in json.loads(resp.choices[0].message.content)
    assert resp.model_extra["lynx"]["exit_policy"] == "budget" and resp.usage.completion_tokens <= 90


def test_logprobs_come_in_the_openai_shape(client: openai.OpenAI) -> None:
    resp = ask(
        client,
        max_tokens=300,
        logprobs=True,
        top_logprobs=2,
    )
    content = resp.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    assert "".join(t.token for t in content).strip() == resp.choices[0].message.content.strip()
    assert resp.choices[0].logprobs.model_extra["reasoning_content"]


def test_reasoning_effort_none_skips_the_thinking(client: openai.OpenAI) -> None:
    resp = ask(
        client,
        max_tokens=60,
        reasoning_effort="none",
    )
    assert resp.usage.completion_tokens_details.reasoning_tokens <= 4 and not resp.model_extra["lynx"]["exited"]


@pytest.mark.parametrize(
    "extra",
    [
        {"chat_template_kwargs": {"enable_thinking": False}},
        {"thinking": {"type": "disabled"}},
        {"reasoning": {"enabled": False}},
        {"reasoning_budget_tokens": 0},
    ],
)
def test_every_thinking_off_switch_skips_the_thinking(client: openai.OpenAI, extra: dict) -> None:
    resp = ask(client, max_tokens=60, extra_body=extra)
    assert resp.usage.completion_tokens_details.reasoning_tokens <= 4 and resp.choices[0].message.content


@pytest.mark.parametrize(
    "extra",
    [
        {"thinking_budget_tokens": 24},
        {"reasoning_budget_tokens": 24},
        {"reasoning": {"max_tokens": 24}},
        {"thinking": {"type": "enabled", "budget_tokens": 24}},
    ],
)
def test_every_thinking_budget_closes_the_thinking_softly(client: openai.OpenAI, extra: dict) -> None:
    """Each dialect's budget closes the thinking near 24 tokens (LYNX off, so that the budget
    is what closes it), and the reply still answers."""
    resp = ask(client, max_tokens=300, extra_body={**extra, "lynx": {"enabled": False}})
    lynx = resp.model_extra["lynx"]
    assert lynx["exit_policy"] == "budget" and lynx["exit_cue"] == "budget"
    assert resp.usage.completion_tokens_details.reasoning_tokens <= CutWindow.budget(24).hard
    assert resp.choices[0].message.content


def test_effort_words_pick_the_risk_level(client: openai.OpenAI) -> None:
    low = ask(client, max_tokens=200, reasoning_effort="low").model_extra["lynx"]
    high = ask(client, max_tokens=200, extra_body={"reasoning": {"effort": "high"}}).model_extra["lynx"]
    assert low["alpha"] <= 0.2 and high["alpha"] <= 0.05 and low["alpha"] > high["alpha"]
    most = ask(client, max_tokens=200, extra_body={"reasoning_effort": "max"}).model_extra["lynx"]
    assert most["policy"].startswith("none") and most["exit_policy"] in (None, "budget")


def test_reasoning_exclude_drops_the_reasoning_but_not_its_count(client: openai.OpenAI) -> None:
    resp = ask(client, max_tokens=300, extra_body={"reasoning": {"exclude": True}})
    message = resp.choices[0].message
    assert message.content and "reasoning_content" not in (message.model_extra or {})
    assert resp.usage.completion_tokens_details.reasoning_tokens > 0
    chunks = list(ask(client, max_tokens=300, stream=True, extra_body={"reasoning": {"exclude": True}}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert not any((d.model_extra or {}).get("reasoning_content") for d in deltas)
    assert "".join(d.content or "" for d in deltas).strip()


def test_unknown_reasoning_fields_are_ignored(client: openai.OpenAI) -> None:
    resp = ask(
        client, max_tokens=120, extra_body={"reasoning": {"summary": "auto"}, "thinking_level": "deep", "verbosity": 1}
    )
    assert resp.choices[0].message.content


def test_a_looping_reply_is_stopped_and_says_so(client: openai.OpenAI) -> None:
    """A logit bias on " and" (token 284) makes the model repeat it forever, on any CPU."""
    resp = ask(client, max_tokens=400, logit_bias={"284": 100})
    lynx = resp.model_extra["lynx"]
    assert lynx["exit_policy"] == "loop" and "answer" in lynx["loops"]
    assert resp.choices[0].finish_reason == "stop" and resp.usage.completion_tokens < 300


def test_unsupported_fields_are_refused_by_name(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(
            client,
            functions=[{"name": "f", "parameters": {"type": "object"}}],
        )
    assert info.value.body["param"] == "functions" and "not supported" in info.value.body["message"]


def test_extra_body_lynx_settings_are_applied(client: openai.OpenAI) -> None:
    off = ask(
        client,
        max_tokens=200,
        extra_body={"lynx": {"enabled": False}},
    )
    lynx = off.model_extra["lynx"]
    assert lynx["policy"] == "none (early exit off)" and lynx["exit_policy"] in (None, "budget")  # no probe exit
    on = ask(
        client,
        max_tokens=200,
        extra_body={"lynx": {"exit": "deer"}},
    )
    assert on.model_extra["lynx"]["exited"] and on.model_extra["lynx"]["exit_policy"] == "deer"


def test_the_lynx_object_says_when_the_risk_level_is_an_estimate(client: openai.OpenAI) -> None:
    """The shipped card records the conditions it was calibrated in (greedy, conclude exits, the
    preset's system prompt): a default request keeps the promise; one outside them gets
    guarantee false and the differences named, streaming or not."""
    default = ask(client, max_tokens=400).model_extra["lynx"]  # room enough: the answer reserve never cuts
    assert default["guarantee"] is True and not default.get("estimate_because")
    warm = ask(client, max_tokens=120, temperature=0.9, seed=3, extra_body={"lynx": {"exit_style": "boxed"}})
    lynx = warm.model_extra["lynx"]
    assert lynx["guarantee"] is False and lynx["policy"].startswith("LYNX probe")
    assert "temperature 0.9 (calibrated greedy)" in lynx["estimate_because"]
    assert "exit style boxed (calibrated with conclude)" in lynx["estimate_because"]
    stream = ask(client, max_tokens=120, stream=True, temperature=0.9, seed=3)
    finals = [c.model_extra["lynx"] for c in stream if c.model_extra and c.model_extra.get("lynx")]
    assert finals and finals[-1]["guarantee"] is False and finals[-1]["estimate_because"]


def test_stop_strings_cut_the_answer(client: openai.OpenAI) -> None:
    resp = ask(
        client,
        max_tokens=300,
        stop=["answer"],
    )
    assert "answer" not in resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"model": "smollm2-135m-reasoner", "messages": "hi"}', 400, "invalid_type"),
        (
            b'{"model": "smollm2-135m-reasoner", "messages": [{"role": "user", "content": "hi"}], "temperature": "x"}',
            400,
            "invalid_type",
        ),
        (
            b'{"model": "smollm2-135m-reasoner", "messages": [{"role": "user", "content": "hi"}], '
            b'"lynx": {"alpha": 2}}',
            400,
            "invalid_value",
        ),
        (b'{"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": ["low"]}', 400, "invalid_value"),
        (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}', 404, "model_not_found"),
        (b"[" * 5000, 400, "invalid_json"),
    ],
)
def test_bad_requests_get_openai_errors(server: dict, body: bytes, status: int, code: str) -> None:
    r = post(server, body)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and "type" in error
    assert httpx.get(f"{server['base']}/health").json()["status"] == "ready"


def test_only_json_bodies_start_a_generation(server: dict) -> None:
    """A text/plain POST (any web page can send one without a preflight) is refused."""
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    r = post(server, body, **{"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def test_cors_answers_preflights_for_the_allowed_origin_only(server: dict) -> None:
    url = f"{server['base']}/v1/chat/completions"
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    ok = httpx.options(url, headers={"Origin": ORIGIN, **asked})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    bad = httpx.options(url, headers={"Origin": "https://evil.example", **asked})
    assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers  # a foreign page: refused


def test_oversize_prompt_is_a_context_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, messages=[{"role": "user", "content": "apple " * 5000}])
    assert info.value.body["code"] == "context_length_exceeded"


def test_api_key_is_checked_everywhere_but_health(server: dict) -> None:
    base = server["base"]
    assert httpx.get(f"{base}/health").json() == {"status": "ready"}  # open, but says nothing more
    assert httpx.get(f"{base}/v1/models").status_code == 401
    assert (
        httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer nope"}).json()["error"]["code"]
        == "invalid_api_key"
    )
    models = httpx.get(f"{base}/v1/models", headers={"Authorization": f"bearer {KEY}"}).json()  # scheme in any case
    assert [m["id"] for m in models["data"]] == ["smollm2-135m-reasoner"]
    health = httpx.get(f"{base}/health", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert health["model"] == "smollm2-135m-reasoner" and "queued" in health


def test_disconnect_mid_stream_frees_the_slot(server: dict, client: openai.OpenAI) -> None:
    stopped = server["app"].state.batcher.stopped
    stream = client.chat.completions.create(
        model="smollm2-135m-reasoner",
        messages=[{"role": "user", "content": "Write a long story about a cat."}],
        max_tokens=2000,
        temperature=0.8,
        stream=True,
        extra_body={"lynx": {"enabled": False}},
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    assert idle(server) and server["app"].state.batcher.stopped == stopped + 1  # stopped, not run to its end


def test_an_abandoned_non_streaming_request_is_stopped(server: dict) -> None:
    """A client that times out on a long request leaves no work behind."""
    stopped = server["app"].state.batcher.stopped
    body = {
        "messages": [{"role": "user", "content": "Write a long story about a cat."}],
        "max_tokens": 100000,
        "lynx": {"enabled": False},
    }
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            f"{server['base']}/v1/chat/completions", json=body, timeout=1.0, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert idle(server) and server["app"].state.batcher.stopped == stopped + 1
    r = post(server, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert r.status_code == 200


def test_a_queued_request_whose_client_left_never_starts(server: dict) -> None:
    batcher = server["app"].state.batcher
    dropped = batcher.dropped
    long = {
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 300,
        "lynx": {"enabled": False},
    }
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(post, server, long) for _ in range(3)]  # every slot taken
        deadline = time.monotonic() + 120
        while batcher.running < 3:  # wait for the event, not the clock
            assert time.monotonic() < deadline, "the three requests never all started"
            time.sleep(0.02)
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                f"{server['base']}/v1/chat/completions",
                json=long,
                timeout=0.5,
                headers={"Authorization": f"Bearer {KEY}"},
            )
        assert len(batcher.waiting) == 1  # it waits for a slot …
        for f in busy:
            assert f.result().status_code == 200
    assert idle(server)
    assert batcher.dropped == dropped + 1  # … and was dropped, not run, when one freed


def test_concurrent_clients_get_an_answer_or_a_clean_busy(server: dict, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)

    def one(i: int) -> int:
        r = post(
            server, {"messages": [{"role": "user", "content": f"What is {i} + 1?"}], "max_tokens": 16, "temperature": 0}
        )
        if r.status_code == 200:
            assert r.json()["choices"][0]["message"]["reasoning_content"] is not None
        else:
            assert r.status_code == 503 and r.json()["error"]["code"] == "server_busy"
            assert r.headers["retry-after"] == "1"
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(one, range(12)))
    assert codes.count(200) >= 7 and set(codes) <= {200, 503}  # 3 running + 4 queued at least
    assert idle(server)
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def test_a_model_without_a_probe_names_its_policy_in_the_stats(reasoner) -> None:  # noqa: ANN001
    """No probe: the `lynx` object says which training-free policy ran and that it promises nothing."""
    from starlette.testclient import TestClient

    engine = Engine(reasoner, probe=None)
    with TestClient(create_app(engine), base_url="http://localhost") as http:  # a local Host: let in
        r = http.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}], "temperature": 0}
        )
    lynx = r.json()["lynx"]
    assert lynx["policy"].startswith("training-free exit (consistency k 2), no risk guarantee")
    assert lynx["guarantee"] is False and lynx["exit_policy"] == "consistency" and lynx["trial_tokens"] > 0
    engine.close()


@pytest.mark.clients
def test_langchain_structured_output_with_a_pydantic_model(server: dict) -> None:
    """A third-party client: LangChain's ChatOpenAI.with_structured_output(pydantic model)."""
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    class Answer(BaseModel):
        answer: int

    llm = ChatOpenAI(
        base_url=f"{server['base']}/v1", api_key=KEY, model="smollm2-135m-reasoner", temperature=0, max_retries=0
    )
    result = llm.with_structured_output(Answer, method="json_schema").invoke(QUESTION)
    assert result == Answer(answer=16)
