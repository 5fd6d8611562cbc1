"""`lynx-edge serve` against a live server on loopback, on the embedded model, driven by the
official openai client (and raw HTTP for the bad requests)."""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import uvicorn

from lynx_edge import Engine
from lynx_edge.server import create_app

KEY = "sekret"
QUESTION = "Tom has 5 apples. He buys 3 more apples. How many apples does Tom have now?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[dict]:
    engine = Engine(n_ctx=2048)
    app = create_app(engine, api_key=KEY, max_queue=3)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield {"base": base, "app": app, "engine": engine}
    srv.should_exit = True
    thread.join(timeout=10)
    engine.close()


@pytest.fixture
def client(server: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server['base']}/v1", api_key=KEY, max_retries=0)


def test_non_streaming_completion_separates_reasoning_and_answer(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": QUESTION}], max_tokens=200, temperature=0
    )
    message = resp.choices[0].message
    assert message.content and "8" in message.content
    assert message.model_extra["reasoning_content"]
    assert message.model_extra["reasoning"] == message.model_extra["reasoning_content"]
    assert resp.usage.completion_tokens_details.reasoning_tokens > 0
    assert resp.usage.completion_tokens > resp.usage.completion_tokens_details.reasoning_tokens
    lynx = resp.model_extra["lynx"]
    assert set(lynx) >= {"exited", "exit_cue", "exit_score", "threshold", "alpha", "tokens_saved"}


def test_streaming_sends_reasoning_then_content_then_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": QUESTION}], max_tokens=200, temperature=0,
        stream=True, stream_options={"include_usage": True},
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
    assert reasoning and "8" in "".join(content)
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert "lynx" in finals[0].model_extra
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens > 0


def test_extra_body_lynx_settings_are_applied(client: openai.OpenAI, server: dict) -> None:
    off = client.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": QUESTION}], max_tokens=120, temperature=0,
        extra_body={"lynx": {"enabled": False}},
    )
    assert off.model_extra["lynx"]["exited"] is False
    assert off.model_extra["lynx"]["probe_calls"] == 0 and off.model_extra["lynx"]["alpha"] is None
    if server["engine"].card is not None:
        on = client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": QUESTION}], max_tokens=120, temperature=0,
            extra_body={"lynx": {"enabled": True, "alpha": 0.2}, "reasoning_effort": "high"},
        )
        assert on.model_extra["lynx"]["alpha"] == server["engine"].rule_for(0.2).level


def test_stop_strings_cut_the_answer(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": QUESTION}], max_tokens=200, temperature=0,
        stop=["answer"],
    )
    assert "answer" not in resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"model": "smollm2-135m", "messages": "hi"}', 400, "invalid_value"),
        (b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "temperature": "x"}', 400, "invalid_type"),
        (b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "lynx": {"alpha": 2}}', 400, "invalid_value"),
        (b'{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}', 404, "model_not_found"),
    ],
)
def test_bad_requests_get_openai_errors(server: dict, body: bytes, status: int, code: str) -> None:
    r = httpx.post(f"{server['base']}/v1/chat/completions", content=body,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and "type" in error
    assert httpx.get(f"{server['base']}/health").json()["status"] == "ok"


def test_oversize_prompt_is_a_context_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "apple " * 5000}])
    assert info.value.body["code"] == "context_length_exceeded"


def test_api_key_is_checked_everywhere_but_health(server: dict) -> None:
    base = server["base"]
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.get(f"{base}/v1/models").status_code == 401
    assert httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer nope"}).json()["error"]["code"] == "invalid_api_key"
    models = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert [m["id"] for m in models["data"]] == ["smollm2-135m"]


def test_disconnect_mid_stream_frees_the_slot(server: dict, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Write a long story about a cat."}],
        max_tokens=2000, temperature=0.8, stream=True, extra_body={"lynx": {"enabled": False}},
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    worker = server["app"].state.worker
    deadline = time.monotonic() + 10
    while worker.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.pending == 0


def test_twenty_concurrent_clients_get_an_answer_or_a_clean_busy(server: dict, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)

    def ask(i: int) -> int:
        r = httpx.post(
            f"{server['base']}/v1/chat/completions",
            json={"model": "smollm2-135m", "messages": [{"role": "user", "content": f"What is {i} + 1?"}],
                  "max_tokens": 24, "temperature": 0},
            headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
        )
        if r.status_code == 200:
            assert r.json()["choices"][0]["message"]["reasoning_content"] is not None
        else:
            assert r.status_code == 503 and r.json()["error"]["code"] == "server_busy"
            assert r.headers["retry-after"] == "1"
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(ask, range(20)))
    assert codes.count(200) >= 4 and set(codes) <= {200, 503}
    assert httpx.get(f"{server['base']}/health").json()["queued"] == 0
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
