"""The OpenAI-compatible client: one chat completion, retried by tenacity, with its usage.

The SDK's own retries are off (``max_retries=0``) so retries never multiply. A retry that
follows a failure the provider may have billed (a timeout, a connection cut after the
request went out, a broken 200) is paid for first through ``Guard.before_retry``, which
charges the lost attempt and reserves the next one, or refuses.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from tenacity import RetryCallState, Retrying, retry_if_exception

from . import negotiate
from .config import Provider
from .errors import LLMError
from .redact import redact, safe_url
from .retry_after import retry_after
from .slot import SlotBusy, hold

RETRY_STATUSES = {408, 409, 429}
MAX_ANSWER_CHARS = 1_000_000


@dataclass
class CallResult:
    """A usable completion and what it cost."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    provider_cost: float | None
    model: str
    response_id: str
    latency: float
    attempts: int
    finish_reason: str
    # Web search results (OpenRouter's url_citation annotations): [{"url", "title"}].
    citations: list[dict[str, str]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Limiter(Protocol):
    """Admits each request (waiting for its place, or raising) and learns from each answer."""

    def before_request(self) -> None: ...

    def learn(self, status: int | None, headers: Any, wait: float | None) -> None: ...


class Guard(Protocol):
    """Pays for a lost attempt after it fails; reserves the next before it is sent, or raises."""

    def before_retry(self, failure: CallFailure) -> None: ...

    def before_attempt(self) -> None: ...


@dataclass(eq=False)
class CallFailure(LLMError):
    """One failed attempt, with what the provider may have billed for it."""

    message: str
    status: int | None = None
    retryable: bool = False
    retry_after: float | None = None
    # None: unknown (charge the estimate); else (prompt, completion, provider cost or None).
    billed: tuple[int, int, float | None] | None = (0, 0, 0.0)
    kind: str = "error"
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    # Set when the failure is tied to what this topic's prompt or answer holds (cut off at
    # max_tokens, a content filter, a prompt too long or refused): the same call would fail
    # the same way, so it is the topic's failed attempt (this text is its feedback), not an outage.
    content_issue: str | None = None
    # The context length the error answer named, when it named one.
    n_ctx: int | None = None

    def __post_init__(self) -> None:
        LLMError.__init__(self, self.message, status=self.status, retryable=self.retryable)

    def __str__(self) -> str:
        return self.message


# A 4xx whose text says the prompt itself is the problem: too long for the model, or refused
# for what it says. A key, a model name or a parameter problem says none of these words.
_CONTENT_CODES = {"context_length_exceeded", "string_above_max_length", "invalid_prompt",
                  "content_policy_violation", "content_filter", "moderation"}
_CONTENT_WORDS = re.compile(
    r"context length|context window|maximum context|too many tokens|prompt is too long|input is too long"
    r"|reduce the length|flagged|moderation|content policy|content management policy|usage polic"
    r"|content filter|safety system", re.IGNORECASE)


def _content_refusal(status: int, detail: str, body: Any) -> str | None:
    """What the provider said, when a 4xx is tied to this prompt's content, else None."""
    if status not in (400, 403, 413, 422):
        return None
    err = body.get("error", body) if isinstance(body, dict) else None
    code = str(err.get("code") or "") if isinstance(err, dict) else ""
    metadata = err.get("metadata") if isinstance(err, dict) else None
    reasons = metadata.get("reasons") if isinstance(metadata, dict) else None
    if status == 413 or code in _CONTENT_CODES or reasons or _CONTENT_WORDS.search(detail):
        extra = f" ({', '.join(str(r) for r in reasons[:5])})" if isinstance(reasons, list) and reasons else ""
        return detail + extra
    return None


# Generation that ran past the context: llama-cpp-python answers 500 with numpy's words,
# llama.cpp a 400 "exceeds the available context size".
_OVERFLOW_WORDS = re.compile(r"could not broadcast input array|exceeds? the available context size"
                             r"|context size has been exceeded|n_ctx", re.IGNORECASE)


_HINTS = {
    401: "the API key was refused; check the key in ${env} (create one at your provider's dashboard)",
    402: "the provider says the account is out of credits or over its key limit; add credits or raise the key's limit",
    403: "the provider refused the request (permissions or moderation); check the key's permissions and the model",
    404: "the model or endpoint was not found; check provider.model and provider.base_url",
}


def _classify(exc: BaseException, provider: Provider) -> CallFailure:
    if isinstance(exc, CallFailure):
        return exc
    where = safe_url(provider.base_url)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        after = retry_after(exc.response.headers if exc.response is not None else None, rate_limited=status == 429)
        retryable = status in RETRY_STATUSES or status >= 500 or (status == 402 and after is not None)
        detail = _error_detail(exc)
        if negotiate.rejects_format(status, detail) and not _OVERFLOW_WORDS.search(detail):
            # The request's shape, not an outage: the same request fails the same way.
            return CallFailure(f"HTTP {status} from {where}: the server rejected the structured-output request "
                               f"({detail}); set provider.structured_outputs = \"auto\" (or \"json_object\") "
                               "in mythline.toml", status=status, kind="response-format")
        if _OVERFLOW_WORDS.search(detail) or (status == 400 and "exceed_context" in str(exc.body)):
            n_ctx = negotiate.context_from_error(exc.body, detail)
            limit = f" of {n_ctx:,} tokens" if n_ctx else ""
            return CallFailure(f"HTTP {status} from {where}: the prompt and its answer overflowed the model's "
                               f"context{limit} ({detail})", status=status, kind="context-overflow", n_ctx=n_ctx,
                               content_issue=f"the prompt and its answer overflowed the model's context{limit}: "
                                             "lower provider.max_output_tokens or give the server a larger "
                                             "context (llama.cpp: --ctx-size)")
        refused = _content_refusal(status, detail, exc.body)
        hint = _HINTS.get(status)
        if refused is not None:
            return CallFailure(f"HTTP {status} from {where}: {refused}", status=status, kind=f"http-{status}",
                               content_issue=f"the provider refused this topic's prompt (HTTP {status}): {refused}")
        if hint and not retryable:
            msg = f"HTTP {status} from {where}: {hint.replace('${env}', provider.api_key_env or 'the key variable')}"
        else:
            msg = f"HTTP {status} from {where}: {detail}"
        return CallFailure(msg, status=status, retryable=retryable, retry_after=after, kind=f"http-{status}")
    if isinstance(exc, openai.APITimeoutError):
        return _timeout(provider, f"no answer from {where} within {provider.timeout:g}s")
    if isinstance(exc, SlotBusy):
        if exc.until is not None:
            when = time.strftime("%H:%M:%S", time.localtime(exc.until))
            why = f"may still be working on a request that timed out, until about {when}"
        else:
            why = f"was busy with another agent's request for {exc.waited:.0f}s (provider.timeout)"
        return CallFailure(f"the local server at {where} {why}; nothing was sent, the next scheduled run tries "
                           "again (raise provider.timeout for slow models)", kind="busy")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        # A refused or unresolvable connection never reached the provider: nothing billed.
        sent = type(cause).__name__ not in ("ConnectError", "ConnectTimeout")
        return CallFailure(f"connection to {where} failed ({type(cause).__name__ if cause else 'error'})",
                           retryable=True, billed=None if sent else (0, 0, 0.0), kind="connection")
    if isinstance(exc, openai.APIError):
        return CallFailure(f"bad response from {where}: {exc.message}", retryable=True,
                           billed=None, kind="bad-response")
    if isinstance(exc, (ValueError, TypeError, AttributeError)):
        # The SDK hands back undecodable bodies as bare JSONDecodeError or odd objects.
        return CallFailure(f"unreadable response from {where} ({type(exc).__name__})",
                           retryable=True, billed=None, kind="bad-response")
    raise exc


def _timeout(provider: Provider, message: str) -> CallFailure:
    if provider.is_local:
        # The server keeps working on an abandoned request: a retry would only queue behind it.
        return CallFailure(message + "; a local server is not sent the request again while it may still be working "
                           "on it: raise provider.timeout (see docs/local-models.md)", billed=None, kind="timeout")
    return CallFailure(message, retryable=True, billed=None, kind="timeout")


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(exc.message)[:300]


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return 0  # JSON true is no token count
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def _usage(resp: Any, *, answered: bool = False) -> tuple[int, int, float | None]:
    """(prompt tokens, completion tokens, provider cost) with anything impossible dropped.

    Only a finite, non-negative JSON number is a cost: ``true`` would be $1.00, NaN would
    disable every cap it touched, a negative one would free budget. A cost of 0 for tokens
    is no cost figure either (a gateway that always says 0 would make USD caps toothless):
    tokens x prices count instead, which is 0 only for a model the config prices at 0. An
    ``answered`` call reporting nothing but zeros is left to the reservation.
    """
    usage = getattr(resp, "usage", None)
    if usage is None:
        return 0, 0, None
    cost = getattr(usage, "cost", None)
    if cost is None and usage.model_extra:
        cost = usage.model_extra.get("cost")
    try:
        cost = None if isinstance(cost, bool) or not isinstance(cost, (int, float)) else float(cost)
    except OverflowError:
        cost = None
    if cost is not None and not (math.isfinite(cost) and cost >= 0):
        cost = None
    prompt, completion = _count(getattr(usage, "prompt_tokens", 0)), _count(getattr(usage, "completion_tokens", 0))
    if cost == 0 and (prompt + completion > 0 or answered):
        cost = None
    return prompt, completion, cost


MAX_CITATIONS = 50


def _citations(resp: Any) -> list[dict[str, str]]:
    """The url_citation annotations of an answer (web search results); [] when there are none
    or they are not what OpenRouter documents."""
    out: list[dict[str, str]] = []
    try:
        message = resp.choices[0].message
        notes = getattr(message, "annotations", None)
        if notes is None:
            notes = (getattr(message, "model_extra", None) or {}).get("annotations")
        for note in notes or []:
            data = note if isinstance(note, dict) else note.model_dump()
            cite = data.get("url_citation") if data.get("type") == "url_citation" else None
            if isinstance(cite, dict) and isinstance(cite.get("url"), str):
                out.append({"url": cite["url"][:2000], "title": str(cite.get("title") or "")[:300]})
    except Exception:  # noqa: BLE001 - search results are optional: a strange shape is none
        return []
    return out[:MAX_CITATIONS]


def _check(resp: Any, max_tokens: int) -> tuple[str, str]:
    """The content and finish reason of a usable completion, else a ``CallFailure``."""
    if isinstance(resp, (str, bytes)) or not hasattr(resp, "choices"):
        raise CallFailure("the provider's answer is not a chat completion", retryable=True, billed=None,
                          kind="bad-response")
    usage = _usage(resp) if getattr(resp, "usage", None) is not None else None
    extra = getattr(resp, "model_extra", None) or {}
    if extra.get("error"):
        err = extra["error"]
        msg = err.get("message") if isinstance(err, dict) else str(err)
        raise CallFailure(f"the provider returned an error inside a 200 response: {msg}", retryable=True,
                          billed=usage, kind="error-in-200")
    if not resp.choices:
        raise CallFailure("the provider returned no choices", retryable=True, billed=usage, kind="empty")
    choice = resp.choices[0]
    reason = choice.finish_reason or ""
    if reason == "length":
        raise CallFailure(f"the answer was cut off at max_tokens={max_tokens}; raise provider.max_output_tokens",
                          retryable=False, billed=usage, kind="length",
                          content_issue=f"the answer was cut off at max_tokens={max_tokens}: keep the record "
                                        "shorter (or raise provider.max_output_tokens)")
    if reason == "content_filter":
        # Whatever text came with it was cut by the filter: never a record.
        raise CallFailure("the provider's content filter stopped the answer (finish_reason content_filter)",
                          retryable=False, billed=usage, kind="content-filter",
                          content_issue="the provider's content filter stopped the answer (finish_reason "
                                        "content_filter)")
    if reason == "error":
        raise CallFailure("the provider ended the answer with an error", retryable=True, billed=usage, kind="error-in-200")
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None) if message else None
    if not isinstance(content, str) or not content.strip():
        raise CallFailure("the provider returned an empty answer", retryable=True, billed=usage, kind="empty")
    if len(content) > MAX_ANSWER_CHARS:
        # No record is that long; a runaway answer is not parsed, stored or echoed back.
        raise CallFailure(f"the answer is larger than {MAX_ANSWER_CHARS:,} characters", retryable=False,
                          billed=usage, kind="too-large")
    return content, reason


class LLMClient:
    """Chat completions against one OpenAI-compatible endpoint."""

    def __init__(self, provider: Provider, api_key: str | None, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, jitter: Callable[[], float] = random.random,
                 on_attempt: Callable[[dict[str, Any]], None] | None = None,
                 check: Callable[[], None] = lambda: None) -> None:
        self.provider = provider
        self.check = check  # called while waiting for a local server's slot: a stop ends the wait
        self.sleep = sleep
        self.clock = clock
        self.jitter = jitter
        self.on_attempt = on_attempt
        self.last_headers: Any = None
        # An answer can echo the key (a hostile or broken server): it is masked before the
        # answer is checkpointed, stored or parsed.
        self._secrets = (api_key,) if api_key else ()
        from . import tls

        timeout = openai.Timeout(provider.timeout, connect=min(10.0, provider.timeout))
        self._client = openai.OpenAI(
            base_url=provider.base_url,
            # A local server needs no key, but the SDK insists on a string.
            api_key=api_key or "no-key",
            max_retries=0,
            timeout=timeout,
            # The SDK's own defaults, with the process's one TLS context (tls.py).
            http_client=openai.DefaultHttpxClient(base_url=provider.base_url, timeout=timeout,
                                                  verify=tls.context()),
        )

    def close(self) -> None:
        self._client.close()

    def _create(self, kwargs: dict[str, Any]) -> Any:
        """The request, bounded in total time: the SDK's timeout only bounds each read, and a
        server that drips a byte at a time would otherwise hold the run (and its lock) for ever."""
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                # The raw response too: its x-ratelimit headers feed the fleet's limiter.
                raw = self._client.chat.completions.with_raw_response.create(**kwargs)
                box["headers"] = raw.headers
                try:
                    box["resp"] = raw.parse()
                except UnicodeDecodeError:
                    # Bytes that are not UTF-8 (a gateway cut a character): a paid answer is read
                    # with U+FFFD in their place rather than lost and bought again.
                    import json

                    text = raw.http_response.content.decode("utf-8", errors="replace")
                    box["resp"] = openai.types.chat.ChatCompletion.construct(**json.loads(text))
            except Exception as exc:  # noqa: BLE001 - handed to the caller's thread
                box["exc"] = exc

        worker = threading.Thread(target=call, name="mythline-llm-call", daemon=True)
        worker.start()
        worker.join(self.provider.timeout + 1.0)
        if worker.is_alive():
            raise _timeout(self.provider, f"no complete answer from {safe_url(self.provider.base_url)} within "
                                          f"{self.provider.timeout:g}s")
        self.last_headers = box.get("headers")
        if "exc" in box:
            raise box["exc"]
        return box["resp"]

    def _wait(self, state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        base = min(self.provider.max_retry_wait, 1.0 * 2 ** (state.attempt_number - 1))
        wait = base * (0.5 + self.jitter() / 2)
        after = failure.retry_after if isinstance(failure, LLMError) else None
        if after is not None:
            wait = max(wait, after)  # never sooner than the provider asked
        return wait

    def _send(self, kwargs: dict[str, Any]) -> Any:
        """``_create``, holding a local server's slot (one request at a time across the fleet)."""
        p = self.provider
        if not p.is_local:
            return self._create(kwargs)
        with hold(p.base_url, wait=p.timeout, check=self.check) as abandoned:
            try:
                return self._create(kwargs)
            except (CallFailure, openai.APITimeoutError) as exc:
                if isinstance(exc, openai.APITimeoutError) or exc.kind == "timeout":
                    abandoned(p.timeout)
                raise

    def chat(self, messages: list[dict[str, str]], *, model: str, max_tokens: int,
             response_format: dict[str, Any] | None, guard: Guard | None = None,
             extra_body: dict[str, Any] | None = None, limiter: Limiter | None = None,
             temperature: float | None = None, seed: int | None = None) -> CallResult:
        """One completion; retried on transient failures; raises ``CallFailure`` for good.
        ``limiter`` admits every request (it may wait, or raise) and reads every answer's headers;
        ``temperature`` and ``seed`` vary a call from the one before (a repair)."""
        p = self.provider
        started = self.clock()
        attempts = 0

        def attempt() -> CallResult:
            nonlocal attempts
            if attempts and guard is not None:
                guard.before_attempt()  # may stop the run or refuse the retry's reservation
            attempts += 1
            t0 = self.clock()
            kwargs: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens,
                                      "temperature": p.temperature if temperature is None else temperature}
            if seed is not None:
                kwargs["seed"] = seed
            if response_format is not None:
                kwargs["response_format"] = response_format
            # The server's own schema field (negotiate) and the step's own (the web plugin).
            extra = {**(negotiate.extra_body(response_format) or {}), **(extra_body or {})}
            if extra:
                kwargs["extra_body"] = extra
            if limiter is not None:
                limiter.before_request()
            self.last_headers = None
            try:
                resp = self._send(kwargs)
                if limiter is not None:
                    limiter.learn(200, self.last_headers, retry_after(self.last_headers, rate_limited=True))
                content, reason = _check(resp, max_tokens)
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised otherwise
                if limiter is not None and isinstance(exc, openai.APIStatusError) and exc.response is not None:
                    headers = exc.response.headers
                    limiter.learn(exc.status_code, headers,
                                  retry_after(headers, rate_limited=exc.status_code == 429))
                failure = _classify(exc, p)
                failure.attempts = attempts
                if failure.n_ctx:
                    negotiate.learned_context(p, model, failure.n_ctx, "an error answer of the server")
                if self.on_attempt:
                    self.on_attempt({"attempt": attempts, "ok": False, "kind": failure.kind, "status": failure.status,
                                     "latency_s": round(self.clock() - t0, 3), "error": failure.message})
                raise failure from None
            prompt, completion, cost = _usage(resp, answered=True)
            return CallResult(content=redact(content, self._secrets), prompt_tokens=prompt, completion_tokens=completion,
                              provider_cost=cost, model=getattr(resp, "model", model) or model,
                              response_id=getattr(resp, "id", "") or "", latency=self.clock() - t0,
                              attempts=attempts, finish_reason=reason, citations=_citations(resp))

        def give_up(state: RetryCallState) -> bool:
            if state.attempt_number >= p.max_attempts:
                return True
            elapsed = self.clock() - started
            failure = state.outcome.exception() if state.outcome else None
            nxt = self._wait(state)
            after = failure.retry_after if isinstance(failure, LLMError) else None
            if after is not None and after > p.max_retry_wait:
                return True  # the provider asks for a longer pause than a run should take
            return elapsed + nxt > p.max_retry_time

        def before_sleep(state: RetryCallState) -> None:
            # tenacity sleeps only after an attempt that `retry` accepted: always a CallFailure.
            failure = state.outcome.exception() if state.outcome else None
            if guard is not None and isinstance(failure, CallFailure):
                guard.before_retry(failure)

        retrying = Retrying(
            stop=give_up,
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, CallFailure) and e.retryable),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)
