"""Tests for the scripted OpenAI-compatible test server, driven by the real SDK."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import openai
import pytest

try:
    from tests.llm_server import (
        Reply,
        ScriptedLLMServer,
        completion,
        empty_choices,
        error,
        error_in_200,
    )
except ImportError:  # tests/ directly on sys.path (no package __init__)
    from llm_server import (  # type: ignore[no-redef]
        Reply,
        ScriptedLLMServer,
        completion,
        empty_choices,
        error,
        error_in_200,
    )

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def server():
    with ScriptedLLMServer() as srv:
        yield srv


def make_client(server: ScriptedLLMServer, timeout: float = 5) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=timeout
    )


def ask(client: openai.OpenAI, content: str = "hello", model: str = "test/model"):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}]
    )


def test_base_url_shape(server):
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.base_url.endswith("/v1")
    assert server.port > 0


def test_completion_parsed_with_content_and_usage(server):
    server.enqueue(completion("hi there", prompt_tokens=12, completion_tokens=3, cost=0.0042))
    resp = ask(make_client(server))

    assert resp.object == "chat.completion"
    assert resp.model == "test/model"
    assert resp.id.startswith("chatcmpl-")
    assert resp.choices[0].message.content == "hi there"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 12
    assert resp.usage.completion_tokens == 3
    assert resp.usage.total_tokens == 15
    # Non-standard "cost" is kept as a pydantic extra: both ways work.
    assert resp.usage.model_extra == {"cost": 0.0042}
    assert resp.usage.cost == 0.0042


def test_completion_without_cost_has_no_cost_field(server):
    server.enqueue(completion("x", finish_reason="length", model="other/model", id="abc"))
    resp = ask(make_client(server))
    assert resp.id == "abc"
    assert resp.model == "other/model"
    assert resp.choices[0].finish_reason == "length"
    assert "cost" not in (resp.usage.model_extra or {})


def test_queue_order_and_request_recording(server):
    server.enqueue(completion("first"), completion("second"))
    server.enqueue(completion("third"))
    assert server.pending == 3
    client = make_client(server)

    t0 = time.monotonic()
    answers = [ask(client, content=f"q{i}").choices[0].message.content for i in range(3)]
    assert answers == ["first", "second", "third"]
    assert server.pending == 0
    assert server.count() == 3
    assert server.count("/v1/chat/completions") == 3
    assert server.count("/models") == 0

    reqs = server.requests
    assert len(reqs) == 3
    for i, req in enumerate(reqs):
        assert req["method"] == "POST"
        assert req["path"] == "/v1/chat/completions"
        assert req["headers"]["authorization"] == "Bearer sk-test"
        assert req["headers"]["content-type"].startswith("application/json")
        assert req["body"]["model"] == "test/model"
        assert req["body"]["messages"] == [{"role": "user", "content": f"q{i}"}]
        assert req["time"] >= t0
    assert reqs[0]["time"] <= reqs[1]["time"] <= reqs[2]["time"]
    # .requests is a snapshot, not the live list.
    reqs.clear()
    assert len(server.requests) == 3


def test_rate_limit_error_with_retry_after(server):
    server.enqueue(error(429, "slow down", headers={"retry-after": "2"}, code="rate_limited"))
    with pytest.raises(openai.RateLimitError) as info:
        ask(make_client(server))
    exc = info.value
    assert exc.status_code == 429
    assert exc.response.headers["retry-after"] == "2"
    assert exc.body == {"message": "slow down", "type": "rate_limit_error", "code": "rate_limited"}
    assert exc.code == "rate_limited"


def test_error_metadata_travels_like_openrouters(server):
    server.enqueue(error(403, "Input was flagged", metadata={"reasons": ["violence"]}))
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(make_client(server))
    assert info.value.body["metadata"] == {"reasons": ["violence"]}
    server.enqueue(error(403, "no metadata"))
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(make_client(server))
    assert "metadata" not in info.value.body  # unchanged for every older caller


def test_401_raises_authentication_error(server):
    server.enqueue(error(401, "bad key"))
    with pytest.raises(openai.AuthenticationError) as info:
        ask(make_client(server))
    assert info.value.status_code == 401
    assert "bad key" in str(info.value)


def test_5xx_raises_internal_server_error(server):
    server.enqueue(error(503, "overloaded"))
    with pytest.raises(openai.InternalServerError) as info:
        ask(make_client(server))
    assert info.value.status_code == 503


def test_delay_longer_than_timeout_raises_timeout_and_stop_is_fast():
    srv = ScriptedLLMServer().start()
    try:
        srv.enqueue(Reply(delay=30, json=completion("late").json))
        # The timeout, not the late answer: the client gave up.
        with pytest.raises(openai.APITimeoutError):
            ask(make_client(srv, timeout=0.5))
    finally:
        t1 = time.monotonic()
        srv.stop()
        # The pending 30 s sleep is interrupted by stop(): bounded by that scripted 30 s, not
        # by a guess at how fast a loaded machine is.
        assert time.monotonic() - t1 < 25


def test_short_delay_is_honoured(server):
    server.enqueue(Reply(delay=0.2, json=completion("slowish").json))
    t0 = time.monotonic()
    resp = ask(make_client(server))
    assert resp.choices[0].message.content == "slowish"
    assert time.monotonic() - t0 >= 0.2


def test_cut_after_raises_connection_error_then_server_recovers(server):
    server.enqueue(Reply(json=completion("x" * 200).json, cut_after=20), completion("ok"))
    client = make_client(server)
    with pytest.raises(openai.APIConnectionError):
        ask(client)
    assert ask(client).choices[0].message.content == "ok"


def test_drop_raises_connection_error_then_server_recovers(server):
    server.enqueue(Reply(drop=True), completion("ok"))
    client = make_client(server)
    with pytest.raises(openai.APIConnectionError) as info:
        ask(client)
    assert not isinstance(info.value, openai.APITimeoutError)
    assert ask(client).choices[0].message.content == "ok"
    assert server.count() == 2


def test_error_in_200_parses_without_exception(server):
    server.enqueue(error_in_200("provider fell over", code=502))
    resp = ask(make_client(server))
    # The SDK does not validate: it returns a ChatCompletion whose choice has
    # finish_reason "error" and keeps the top-level "error" as an extra field.
    assert isinstance(resp, openai.types.chat.ChatCompletion)
    assert resp.choices[0].finish_reason == "error"
    assert resp.choices[0].message.content == ""
    assert resp.model_extra["error"] == {"message": "provider fell over", "code": 502}
    assert resp.error == {"message": "provider fell over", "code": 502}
    assert resp.usage is None


def test_empty_choices_parses_without_exception(server):
    server.enqueue(empty_choices())
    resp = ask(make_client(server))
    assert isinstance(resp, openai.types.chat.ChatCompletion)
    assert resp.choices == []
    assert resp.usage.prompt_tokens == 100
    assert resp.usage.completion_tokens == 0


def test_raw_body(server):
    server.enqueue(Reply(raw=b"plain words", headers={"content-type": "text/plain"}))
    # With a non-JSON content type the SDK hands back the text unparsed.
    assert ask(make_client(server)) == "plain words"


def test_responder_takes_priority_over_queue(server):
    server.enqueue(completion("queued"))

    def responder(req):
        prompt = req["body"]["messages"][-1]["content"]
        if "research" in prompt:
            return completion(json.dumps({"kind": "research"}))
        if "audit" in prompt:
            return completion(json.dumps({"verdict": "pass"}))
        return error(400, "unexpected prompt")

    server.responder = responder
    client = make_client(server)
    assert json.loads(ask(client, "do research").choices[0].message.content) == {"kind": "research"}
    assert json.loads(ask(client, "run audit").choices[0].message.content) == {"verdict": "pass"}
    with pytest.raises(openai.BadRequestError):
        ask(client, "something else")
    assert server.pending == 1

    server.responder = None
    assert ask(client).choices[0].message.content == "queued"


def test_responder_may_return_str_and_errors_are_loud(server):
    client = make_client(server)
    server.responder = lambda req: "plain string"
    assert ask(client).choices[0].message.content == "plain string"

    def broken(req):
        raise KeyError("nope")

    server.responder = broken
    with pytest.raises(openai.InternalServerError) as info:
        ask(client)
    assert "KeyError" in str(info.value)


def test_default_used_when_queue_empty(server):
    client = make_client(server)
    server.enqueue(completion("queued"))
    server.default = completion("fallback")
    assert ask(client).choices[0].message.content == "queued"
    assert ask(client).choices[0].message.content == "fallback"
    assert ask(client).choices[0].message.content == "fallback"

    server.default = lambda req: completion("echo:" + req["body"]["messages"][0]["content"])
    assert ask(client, "abc").choices[0].message.content == "echo:abc"


def test_no_scripted_reply_is_500(server):
    with pytest.raises(openai.InternalServerError) as info:
        ask(make_client(server))
    assert info.value.status_code == 500
    assert "no scripted reply" in str(info.value)


def test_unknown_path_is_404(server):
    with pytest.raises(openai.NotFoundError):
        make_client(server).models.list()
    assert server.count("/models") == 1
    assert server.count() == 0
    assert server.requests[0]["method"] == "GET"
    assert server.requests[0]["body"] is None


def test_keep_alive_many_requests_are_fast(server):
    server.default = completion("again")
    client = make_client(server)
    ask(client)  # warm up the connection pool
    for _ in range(20):
        assert ask(client).choices[0].message.content == "again"
    assert server.count() == 21
    # Kept alive: all 21 came over one connection (its client port), whatever they took.
    assert len({r["client_port"] for r in server.requests}) == 1


def test_reachable_from_subprocess(server):
    server.enqueue(completion("from child"))
    code = textwrap.dedent(
        """
        import json, sys, urllib.request
        req = urllib.request.Request(
            sys.argv[1] + "/chat/completions",
            data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-child"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            print(json.load(r)["choices"][0]["message"]["content"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, server.base_url],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "from child"
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-child"


def test_stop_is_idempotent_and_context_manager_restartable():
    srv = ScriptedLLMServer()
    with srv:
        srv.enqueue(completion("one"))
        assert ask(make_client(srv)).choices[0].message.content == "one"
    srv.stop()
    with pytest.raises(RuntimeError):
        _ = srv.base_url


def test_request_cut_off_mid_body_is_not_counted(server):
    """A client killed while sending its request never reaches the model: not a call."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(server.base_url)
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        assert sock.recv(1024) == b""  # closed without an answer
    server.enqueue(completion("after"))
    assert ask(make_client(server)).choices[0].message.content == "after"
    assert server.count() == 1
