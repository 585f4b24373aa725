"""The LLM client through its seam (``LLMClient.chat`` with injected sleep, clock and jitter)
against the scripted server: how each failure is classified, what usage counts, how long a
Retry-After makes it wait, and when it gives up."""

from __future__ import annotations

import math
import time
from email.utils import formatdate

import pytest

from mythline_cli.config import Provider
from mythline_cli.errors import LLMError
from mythline_cli.llm import CallFailure, LLMClient

from llm_server import Reply, completion, error

MESSAGES = [{"role": "user", "content": "hi"}]


class Clock:
    """A clock that the recorded sleeps move forward."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def client_for(server, clock: Clock | None = None, **settings) -> tuple[LLMClient, Clock]:
    clock = clock or Clock()
    values = {"base_url": server.base_url, "model": "test/model", "api_key_env": "", "timeout": 5,
              "max_attempts": 3, "max_retry_wait": 60, "max_retry_time": 300, "local": False} | settings
    return LLMClient(Provider(**values), None, sleep=clock.sleep, clock=clock, jitter=lambda: 1.0), clock


def call(client: LLMClient):
    try:
        return client.chat(MESSAGES, model="test/model", max_tokens=50, response_format=None)
    finally:
        client.close()


CLASSIFIED = [
    # reply, kind, retryable, content issue
    pytest.param(error(400, "bad parameter"), "http-400", False, False, id="400"),
    pytest.param(error(401, "nope"), "http-401", False, False, id="401"),
    pytest.param(error(402, "no credits"), "http-402", False, False, id="402"),
    pytest.param(error(402, "no credits", headers={"retry-after": "1"}), "http-402", True, False, id="402-wait"),
    pytest.param(error(408), "http-408", True, False, id="408"),
    pytest.param(error(409), "http-409", True, False, id="409"),
    pytest.param(error(429), "http-429", True, False, id="429"),
    pytest.param(error(503), "http-503", True, False, id="503"),
    pytest.param(error(400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded"),
                 "http-400", False, True, id="400-context"),
    pytest.param(error(500, "response_format: Input should be 'text' or 'json_object'"), "response-format", False,
                 False, id="500-response-format"),
    pytest.param(error(422, "json_schema is not supported"), "response-format", False, False, id="422-format"),
    pytest.param(error(500, "could not broadcast input array from shape (4097,) into shape (4096,)"),
                 "context-overflow", False, True, id="500-overflow"),
    pytest.param(Reply(raw=b"not json"), "bad-response", True, False, id="not-json"),
    pytest.param(completion("", finish_reason="stop"), "empty", True, False, id="empty"),
    pytest.param(completion("cut", finish_reason="length"), "length", False, True, id="length"),
]


@pytest.mark.parametrize("reply, kind, retryable, issue", CLASSIFIED)
def test_each_failure_is_classified(llm_server, reply, kind, retryable, issue) -> None:
    llm_server.default = reply
    client, _ = client_for(llm_server, max_attempts=1)
    with pytest.raises(CallFailure) as failed:
        call(client)
    exc = failed.value
    assert isinstance(exc, LLMError)
    assert (exc.kind, exc.retryable, exc.content_issue is not None) == (kind, retryable, issue)
    assert exc.attempts == 1


def test_retryable_failures_are_retried_up_to_max_attempts(llm_server) -> None:
    llm_server.default = error(503)
    client, clock = client_for(llm_server, max_attempts=4)
    with pytest.raises(CallFailure) as failed:
        call(client)
    assert llm_server.count() == 4 and failed.value.attempts == 4
    assert clock.waits == [1.0, 2.0, 4.0]  # doubling, jitter pinned at its top


def test_a_failure_that_is_not_retryable_is_sent_once(llm_server) -> None:
    llm_server.default = error(500, "response_format: Input should be 'text' or 'json_object'")
    client, clock = client_for(llm_server, max_attempts=5)
    with pytest.raises(CallFailure):
        call(client)
    assert llm_server.count() == 1 and clock.waits == []


@pytest.mark.parametrize("headers, asked", [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after-ms": "2500"}, 2.5),
    ({"x-ratelimit-reset-requests": "9s"}, 9.0),
])
def test_a_retry_waits_at_least_what_the_provider_asked(llm_server, headers, asked) -> None:
    llm_server.enqueue(error(429, headers=headers), completion("ok"))
    client, clock = client_for(llm_server)
    assert call(client).content == "ok"
    assert clock.waits == [pytest.approx(max(asked, 1.0))]


def test_a_retry_after_http_date_is_read(llm_server) -> None:
    llm_server.enqueue(error(503, headers={"retry-after": formatdate(time.time() + 30, usegmt=True)}),
                       completion("ok"))
    client, clock = client_for(llm_server)
    call(client)
    assert 25 <= clock.waits[0] <= 31


def test_a_ratelimit_reset_on_a_success_path_is_no_instruction(llm_server) -> None:
    # Only a 429 makes x-ratelimit-reset a wait: on a 503 it just says when a window rolls over.
    llm_server.enqueue(error(503, headers={"x-ratelimit-reset-requests": "50s"}), completion("ok"))
    client, clock = client_for(llm_server)
    call(client)
    assert clock.waits == [1.0]


def test_a_wait_longer_than_max_retry_wait_gives_up_at_once_with_the_wait(llm_server) -> None:
    llm_server.default = error(429, headers={"retry-after": "900"})
    client, clock = client_for(llm_server, max_retry_wait=60)
    with pytest.raises(CallFailure) as failed:
        call(client)
    assert llm_server.count() == 1 and clock.waits == []
    assert failed.value.retry_after == pytest.approx(900)


def test_max_retry_time_bounds_the_whole_call(llm_server) -> None:
    llm_server.default = error(503, headers={"retry-after": "40"})
    client, clock = client_for(llm_server, max_attempts=10, max_retry_time=100)
    with pytest.raises(CallFailure):
        call(client)
    assert clock.waits == [40.0, 40.0]  # a third wait would end past 100s
    assert llm_server.count() == 3


@pytest.mark.parametrize("usage, expected", [
    ({"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.002}, (10, 5, 0.002)),
    ({"prompt_tokens": 10, "completion_tokens": 5}, (10, 5, None)),
    ({"prompt_tokens": 10, "completion_tokens": 5, "cost": True}, (10, 5, None)),
    ({"prompt_tokens": 10, "completion_tokens": 5, "cost": -1}, (10, 5, None)),
    ({"prompt_tokens": 10, "completion_tokens": 5, "cost": 0}, (10, 5, None)),
    ({"prompt_tokens": "x", "completion_tokens": True, "cost": "0.1"}, (0, 0, None)),
])
def test_usage_keeps_only_what_can_be_a_bill(llm_server, usage, expected) -> None:
    reply = completion("ok")
    reply.json["usage"] = usage
    llm_server.default = reply
    client, _ = client_for(llm_server)
    result = call(client)
    got = (result.prompt_tokens, result.completion_tokens, result.provider_cost)
    assert got == expected


def test_a_nan_cost_is_no_cost(llm_server) -> None:
    llm_server.default = Reply(raw=completion("ok").body_bytes().replace(b'"total_tokens"', b'"cost": NaN, "total_tokens"'))
    client, _ = client_for(llm_server)
    cost = call(client).provider_cost
    assert cost is None or not math.isnan(cost)
    assert cost is None


def test_a_failed_attempt_says_what_it_may_have_billed(llm_server) -> None:
    llm_server.default = error(400, "bad")
    client, _ = client_for(llm_server, max_attempts=1)
    with pytest.raises(CallFailure) as failed:
        call(client)
    assert failed.value.billed == (0, 0, 0.0)  # an error answer is no bill
    llm_server.default = completion("", prompt_tokens=30, completion_tokens=0)
    client, _ = client_for(llm_server, max_attempts=1)
    with pytest.raises(CallFailure) as failed:
        call(client)
    assert failed.value.billed == (30, 0, None)


def test_a_repair_can_vary_temperature_and_seed(llm_server) -> None:
    llm_server.default = completion("ok")
    client, _ = client_for(llm_server)
    client.chat(MESSAGES, model="test/model", max_tokens=5, response_format=None, temperature=0.3, seed=7)
    client.close()
    body = llm_server.requests[-1]["body"]
    assert (body["temperature"], body["seed"]) == (0.3, 7)


def test_an_llm_error_has_typed_defaults() -> None:
    plain = LLMError("x", status=500)
    assert (plain.kind, plain.billed, plain.attempts, plain.retry_after, plain.content_issue) == \
        ("error", (0, 0, 0.0), 1, None, None)
