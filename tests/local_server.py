"""llama-cpp-python's behaviours, as met with version 0.3.x serving a small GGUF model, on the
scripted server: a 500 with a request-validation body for ``response_format`` json_schema; a
``schema`` inside ``{"type": "json_object"}`` (or Ollama's ``format``) enforced; no
``usage.cost``; ``max_tokens`` cut to what the context leaves, and a generation past the
context a 500 ("could not broadcast input array"); ``/props`` and ``/v1/models`` telling the
context length; one generation at a time. The "model" answers a valid record only when the
schema is enforced (a small model ignores a schema written in the prompt), the same answer
for the same request at temperature 0 without a seed."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from factories import record_json
from llm_server import Reply, ScriptedLLMServer, completion, error

VALIDATION_500 = ("[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should "
                  "be 'text' or 'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or "
                  "'json_object'\"}}]")
BYTES_PER_TOKEN = 4


def _is_audit(body: dict[str, Any]) -> bool:
    # The audit is the one request without a system message.
    return not any(m["role"] == "system" for m in body["messages"])


def topic(body: dict[str, Any]) -> str:
    for message in body["messages"]:
        if message["role"] == "user" and "**" in message["content"]:
            return message["content"].split("**", 2)[1]
    return "?"


def small_model(agent: str) -> Callable[[dict[str, Any], bool], str]:
    """A record when the schema is enforced, else an answer that ignores it."""
    def answer(body: dict[str, Any], enforced: bool) -> str:
        if _is_audit(body):
            return json.dumps({"score": 0.9, "issues": []})
        if enforced:
            return record_json(agent, topic(body))
        return json.dumps({"answer": topic(body)})
    return answer


class LocalFake:
    """Installs llama-cpp-python's behaviours on ``server`` (see the module docstring)."""

    def __init__(self, server: ScriptedLLMServer, answer: Callable[[dict[str, Any], bool], str], *,
                 n_ctx: int = 32768, props: bool = True, models_meta: bool = True, model: str = "test/model",
                 delay: float = 0.0) -> None:
        self.server, self.answer, self.n_ctx, self.delay = server, answer, n_ctx, delay
        server.responder = self.respond
        server.serial = threading.Lock()
        if props:
            server.routes["/props"] = Reply(json={"default_generation_settings": {"n_ctx": n_ctx}})
        row: dict[str, Any] = {"id": model, "object": "model", "owned_by": "me"}
        if models_meta:
            row["meta"] = {"n_ctx_train": n_ctx}
        server.routes["/v1/models"] = Reply(json={"object": "list", "data": [row]})

    def respond(self, request: dict[str, Any]) -> Reply:
        body = request["body"]
        fmt = body.get("response_format") or {}
        if fmt.get("type") not in (None, "text", "json_object"):
            return Reply(status=500, json={"error": {"message": VALIDATION_500, "type": "internal_server_error",
                                                     "param": None, "code": None}})
        enforced = (fmt.get("type") == "json_object" and isinstance(fmt.get("schema"), dict)) \
            or isinstance(body.get("format"), dict)
        prompt = sum(len(m["content"]) for m in body["messages"]) // BYTES_PER_TOKEN
        content = self.answer(body, enforced)
        if body.get("temperature") or body.get("seed") is not None:
            content = self.answer({**body, "varied": True}, enforced)
        tokens = max(1, len(content) // BYTES_PER_TOKEN)
        room = self.n_ctx - prompt
        if tokens > room:
            return Reply(status=500, delay=self.delay, json={"error": {
                "message": f"could not broadcast input array from shape ({tokens + prompt},) into shape "
                           f"({self.n_ctx},)", "type": "internal_server_error", "param": None, "code": None}})
        reply = completion(content, prompt_tokens=prompt, completion_tokens=tokens, model=body.get("model", ""))
        if tokens > min(body.get("max_tokens") or room, room):
            reply = completion(content[: body["max_tokens"] * BYTES_PER_TOKEN], prompt_tokens=prompt,
                               completion_tokens=body["max_tokens"], finish_reason="length")
        reply.delay = self.delay
        return reply


__all__ = ["VALIDATION_500", "LocalFake", "error", "small_model"]
