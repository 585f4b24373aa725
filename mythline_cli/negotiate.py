"""What a provider takes: its structured-output mode and its model's context length.

``structured_outputs = "auto"`` starts with JSON Schema and steps down the ladder when the
server rejects ``response_format``; the step reached is recorded in ``providers.json`` under
the state home, one entry per base URL and model, and checked again when the provider
settings change. A local server is asked for its context length once, the same way.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import files, paths
from .errors import ContextTooSmall
from .redact import safe_url

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .config import Provider

# Best first: the server enforces the schema, then the schema in the server's own field
# (llama.cpp's ``schema`` inside ``response_format``, Ollama's ``format``), then JSON mode
# with the schema in the prompt only.
LADDER = ("json_schema", "json_object_schema", "json_object")
FILE = "providers.json"
CHARS_PER_TOKEN = 4

# A rejection of the request's shape that names the structured-output part of it. The
# words are llama-cpp-python's validation error ("Input should be 'text' or 'json_object'"),
# llama.cpp's and vLLM's, and OpenAI's own ("response_format", "json_schema").
_FORMAT_WORDS = re.compile(r"response_format|json_schema|'json_object'|\"json_object\"|structured output"
                           r"|schema.*not supported|unsupported.*schema|grammar", re.IGNORECASE)


def rejects_format(status: int, detail: str) -> bool:
    """Whether an error answer is the server refusing ``response_format`` (any 4xx or 5xx)."""
    return status >= 400 and bool(_FORMAT_WORDS.search(detail or ""))


@functools.cache
def _schema_text(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema())


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model.model_json_schema()``, generated once per process (each step a run plans asks
    for one); every caller gets its own copy."""
    return json.loads(_schema_text(model))


def response_format(model: type[BaseModel], mode: str, name: str | None = None) -> dict[str, Any]:
    """The ``response_format`` of ``mode`` (one of ``LADDER``) for the record ``model``."""
    if mode == "json_object":
        return {"type": "json_object"}
    schema = json_schema(model)
    if mode == "json_object_schema":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": name or model.__name__, "strict": True, "schema": schema}}


def extra_body(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    """Fields beside ``response_format``: Ollama reads a schema from its own ``format``."""
    if fmt and fmt.get("type") == "json_object" and isinstance(fmt.get("schema"), dict):
        return {"format": fmt["schema"]}
    return None


def prompt_mode(mode: str) -> str:
    """The mode the prompts are written for: the schema travels in the prompt unless the
    server enforces it as JSON Schema (a server may accept its own field and ignore it)."""
    return "json_schema" if mode == "json_schema" else "json_object"


def _key(provider: Provider, model: str) -> str:
    return f"{safe_url(provider.base_url)} {model}"


def _fingerprint(provider: Provider, model: str) -> str:
    # Any change to the provider settings (a new server build is usually a new URL or model
    # name; a changed mode or context is a changed setting) asks the server again.
    fields = provider.model_dump(mode="json", exclude={"prices", "max_attempts", "max_retry_wait",
                                                       "max_retry_time", "estimate_margin", "tokenizer"})
    fields["base_url"] = safe_url(provider.base_url)
    fields["model"] = model
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _read() -> dict[str, Any]:
    try:
        data = files.read_json(paths.home() / FILE)
    except (files.CorruptFile, OSError, RecursionError):
        return {}  # a lost decision costs one rejected call to learn it again
    return data if isinstance(data, dict) else {}


def entry(provider: Provider, model: str) -> dict[str, Any]:
    """The recorded facts for this provider and model, or {} when none fit its settings."""
    found = _read().get(_key(provider, model))
    if not isinstance(found, dict) or found.get("fingerprint") != _fingerprint(provider, model):
        return {}
    return found


def record(provider: Provider, model: str, **facts: Any) -> dict[str, Any]:
    """Add ``facts`` to the entry (a fresh one when the settings changed); returns it."""
    from . import locking

    home = paths.home()
    home.mkdir(parents=True, exist_ok=True)
    held = locking.acquire(home / "providers.lock", 30)
    try:
        data = _read()
        key, fp = _key(provider, model), _fingerprint(provider, model)
        current = data.get(key) if isinstance(data.get(key), dict) else None
        if current is None or current.get("fingerprint") != fp:
            current = {"fingerprint": fp}
        changed = {k: v for k, v in facts.items() if current.get(k) != v}
        if changed:
            current.update(changed, checked_at=datetime.now(timezone.utc).isoformat())
            data[key] = current
            files.write_json(home / FILE, data)
        return dict(current)
    finally:
        held.release()


def mode(provider: Provider, model: str) -> str:
    """The structured-output mode to send: the setting, or what ``auto`` has learned."""
    if provider.structured_outputs != "auto":
        return provider.structured_outputs
    chosen = entry(provider, model).get("structured_outputs")
    return chosen if chosen in LADDER else LADDER[0]


def step_down(provider: Provider, model: str, rejected: str, why: str) -> str | None:
    """After the server rejected ``rejected``: the next mode, recorded; None when the
    setting is not ``auto`` or nothing is left to try."""
    if provider.structured_outputs != "auto" or rejected not in LADDER or rejected == LADDER[-1]:
        return None
    nxt = LADDER[LADDER.index(rejected) + 1]
    record(provider, model, structured_outputs=nxt, structured_why=f"the server rejected {rejected}: {why[:200]}")
    return nxt


def accepted(provider: Provider, model: str, sent: str) -> None:
    """A call in mode ``sent`` was answered: under ``auto`` that is the decision."""
    if provider.structured_outputs == "auto" and entry(provider, model).get("structured_outputs") != sent:
        record(provider, model, structured_outputs=sent)


# -- context length ----------------------------------------------------------------------

_CTX_IN_ERROR = re.compile(r"\bn_ctx\b\D{0,20}(\d{3,9})|context (?:length|size|window)\D{0,30}(\d{3,9})", re.I)


def context_from_error(body: Any, detail: str) -> int | None:
    """A context length an error answer states (llama.cpp's ``n_ctx`` field, or its text)."""
    err = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(err, dict):
        for k in ("n_ctx", "context_length"):
            value = err.get(k)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    match = _CTX_IN_ERROR.search(detail or "")
    return int(match.group(1) or match.group(2)) if match else None


def _server_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def ask_context(provider: Provider, model: str, *, key: str | None, timeout: float = 5.0) -> tuple[int, str] | None:
    """(context length, where it came from) from the server: llama.cpp's ``/props``
    (``default_generation_settings.n_ctx``), else ``/models`` (``meta.n_ctx``,
    ``meta.n_ctx_train``, OpenRouter's ``context_length``); None when it says nothing;
    ``ConnectionError`` when it does not answer at all."""
    reached = False

    def get(url: str) -> Any:
        import urllib.error
        import urllib.request

        nonlocal reached
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - the configured URL
                reached = True
                return json.loads(resp.read(2_000_000))
        except urllib.error.HTTPError:
            reached = True  # it answered: it has no such endpoint
        except (OSError, ValueError):
            pass  # not up, or not JSON: the server says nothing
        return None

    found = _from_props(get(_server_root(provider.base_url) + "/props")) or \
        _from_models(get(provider.base_url.rstrip("/") + "/models"), model)
    if found is None and not reached:
        raise ConnectionError("the server did not answer")
    return found


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _from_props(data: Any) -> tuple[int, str] | None:
    settings = data.get("default_generation_settings") if isinstance(data, dict) else None
    n_ctx = _number(settings.get("n_ctx")) if isinstance(settings, dict) else None
    return (n_ctx, "the server's /props (n_ctx)") if n_ctx else None


def _from_models(data: Any, model: str) -> tuple[int, str] | None:
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return None
    rows = [r for r in rows if isinstance(r, dict)]
    # A server with one model loaded serves it whatever name the request uses.
    mine = [r for r in rows if r.get("id") == model] or (rows if len(rows) == 1 else [])
    for row in mine:
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        for source, value in (("meta.n_ctx", meta.get("n_ctx")), ("context_length", row.get("context_length")),
                              ("meta.n_ctx_train", meta.get("n_ctx_train"))):
            n_ctx = _number(value)
            if n_ctx:
                return n_ctx, f"the server's /models ({source})"
    return None


def context_length(provider: Provider, model: str, *, key: str | None, ask: bool = True) -> tuple[int | None, str]:
    """(the model's context length, where it came from): the setting, the recorded figure,
    or (``ask``, local servers only) the server's answer, recorded."""
    if provider.context_length:
        return provider.context_length, "provider.context_length"
    known = entry(provider, model)
    if _number(known.get("context_length")):
        return int(known["context_length"]), str(known.get("context_source") or "recorded")
    if not ask or not provider.is_local or known.get("context_asked"):
        return None, "unknown"
    try:
        found = ask_context(provider, model, key=key)
    except ConnectionError:
        return None, "unknown"  # asked again by the next run: the server may not be up yet
    if found is None:
        record(provider, model, context_asked=True)  # asked once per settings, not every run
        return None, "unknown"
    record(provider, model, context_length=found[0], context_source=found[1])
    return found


def learned_context(provider: Provider, model: str, n_ctx: int, source: str) -> None:
    """An error answer named the context length: keep it for the next estimate."""
    if not provider.context_length:
        record(provider, model, context_length=n_ctx, context_source=source)


def check_fits(provider: Provider, model: str, estimate: Any, *, key: str | None, step: str,
               ask: bool = True) -> None:
    """Raise ``ContextTooSmall`` when the call cannot fit the model's known context. The
    prompt is counted without the estimate's margin (the margin guards money), and a byte
    count (tokenizer "chars") at 4 bytes a token, as English text runs: a refusal should
    come only for a prompt that does not fit; a near miss goes to the server, whose overflow
    answer is the topic's failed attempt. ``ask``: as for :func:`context_length`."""
    limit, source = context_length(provider, model, key=key, ask=ask)
    if not limit:
        return
    prompt = int(estimate.prompt_tokens / provider.estimate_margin)
    if estimate.counted_by == "chars":
        prompt //= CHARS_PER_TOKEN
    if prompt + estimate.max_output_tokens > limit:
        raise ContextTooSmall(step=step, model=model, prompt=prompt, output=estimate.max_output_tokens,
                              limit=limit, source=source)
