"""Estimates before a call: prompt tokens, the output bound, and their price.

Prices come from the config first, then from tokencost's bundled price table, read as
a JSON file: importing ``tokencost`` would import ``anthropic`` (seconds of start-up),
and its token counter can reach Anthropic's API for ``claude-`` models. Never import it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeGuard

from .config import Provider

# Chat formats add a few tokens per message and per reply beyond the text itself.
PER_MESSAGE_TOKENS = 4
PER_REPLY_TOKENS = 3
# tiktoken's o200k_base file, where tiktoken caches it (tiktoken_ext/openai_public.py).
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


@dataclass(frozen=True)
class Price:
    """USD per token for input and output, and where the figure came from."""

    input: float
    output: float
    source: str


@dataclass(frozen=True)
class Estimate:
    """The most a call can cost, reserved before it is sent."""

    prompt_tokens: int
    max_output_tokens: int
    usd: float | None
    counted_by: str  # "tiktoken" or "chars"
    price: Price | None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_output_tokens


def _table_path() -> Path | None:
    # find_spec locates the package without running its __init__ (and so without anthropic).
    spec = importlib.util.find_spec("tokencost")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model_prices.json"
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    path = _table_path()
    if path is None:
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _candidates(model: str) -> list[str]:
    # OpenRouter names are "vendor/model"; the table knows some as "openrouter/vendor/model",
    # some as "vendor/model" and most as bare "model". Only spellings of the same model count:
    # a variant ("model:extended", ":thinking", ":online", ":floor") is billed differently from
    # its base (longer context, reasoning tokens, web search per request), so it is unknown
    # until the config prices it; and a bare name counts only for the vendor the table names.
    names = [model, f"openrouter/{model}"]
    vendor, _, bare = model.partition("/")
    if ":" not in model and bare and "/" not in bare:
        entry = price_table().get(bare)
        if isinstance(entry, dict) and entry.get("litellm_provider") == vendor:
            names.append(bare)
    return names


def _rate(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _table_price(name: str) -> Price | None:
    entry = price_table().get(name)
    if not isinstance(entry, dict):
        return None
    inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if not (_rate(inp) and _rate(out)):
        return None
    if inp == 0 and out == 0:
        # The table says $0 for experimental, local and promotional models: that is a
        # price nobody checked, not a free model. The config says when a model is free.
        return None
    return Price(float(inp), float(out), f"tokencost:{name}")


def lookup_price(model: str, provider: Provider, *, remember: bool = False) -> Price | None:
    """The model's price, or ``None`` when neither the config nor the table knows it.

    ``remember``: keep a figure read from the table in the state home's cache for the next
    process (a run does; ``--dry-run`` and ``doctor`` write nothing)."""
    configured = provider.prices.get(model)
    if configured is not None:
        return Price(configured.input_per_million / 1e6, configured.output_per_million / 1e6, "config")
    return _table_lookup(model, remember=remember)


def _table_lookup(model: str, *, remember: bool = False) -> Price | None:
    digest = _table_digest()
    known = _cached_prices(digest) if digest is not None else {}
    if model in known:
        entry = known[model]
        if entry is None:
            return None
        if (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str)
                and all(type(v) is float and 0 <= v < math.inf for v in entry[:2])):
            return Price(entry[0], entry[1], entry[2])
    price = _table_search(model)
    if digest is not None and remember:
        _remember(digest, known, model, price)
    return price


def _table_search(model: str) -> Price | None:
    for name in _candidates(model):
        price = _table_price(name)
        if price is not None:
            return price
    return None


# Parsing the whole table (three quarters of a megabyte of JSON) costs a run more than
# everything else it does with prices: the figures a run looked up are kept beside the
# settings cache, valid for exactly the table file they came from.
PRICE_CACHE = "prices.json"


@lru_cache(maxsize=1)
def _table_digest() -> str | None:
    path = _table_path()
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else None
    except OSError:
        return None


def _cache_file() -> Path:
    from . import paths

    return paths.home() / "cache" / PRICE_CACHE


def _cached_prices(digest: str) -> dict[str, Any]:
    try:
        doc = json.loads(_cache_file().read_bytes())
    except (OSError, ValueError):
        return {}
    if isinstance(doc, dict) and doc.get("table") == digest and isinstance(doc.get("models"), dict):
        return dict(doc["models"])
    return {}


def _remember(digest: str, known: dict[str, Any], model: str, price: Price | None) -> None:
    """Add ``model``'s figure to the cache; never fails a command (the table answers instead)."""
    from . import files, paths

    known[model] = None if price is None else [price.input, price.output, price.source]
    try:
        if paths.home().is_dir():  # never create a state home just to cache
            files.write_bytes_atomic(_cache_file(), files.dumps_compact({"table": digest, "models": known})
                                     .encode("utf-8"), durable=False)
    except Exception:  # noqa: BLE001 - a cache that cannot be written is only a slower estimate
        return


def why_unpriced(model: str) -> str | None:
    """Why the table's figure for a model like ``model`` is not used for it, if it has one."""
    table = price_table()
    for name in (model, f"openrouter/{model}"):
        entry = table.get(name)
        if isinstance(entry, dict) and entry.get("input_cost_per_token") == 0 and entry.get("output_cost_per_token") == 0:
            return "the bundled price table prices it at $0, which means unknown, not free"
    base = model.partition(":")[0]
    if base != model and _table_lookup(base) is not None:
        return f"it is a variant of {base}, which is billed differently, so {base}'s price is not used"
    vendor, _, bare = model.partition("/")
    entry = table.get(bare) if bare else None
    if isinstance(entry, dict) and entry.get("litellm_provider") not in (None, vendor):
        return f"the table's {bare} is {entry['litellm_provider']}'s model, not {vendor}'s"
    return None


def _byte_count(text: str) -> int:
    # Every token of a byte-level BPE vocabulary (o200k, cl100k, Llama 3's) covers at least
    # one byte, so the UTF-8 length is an upper bound on the tokens of any script. A lone
    # surrogate (half an emoji) is counted as the three bytes it takes once replaced.
    return len(text.encode("utf-8", "surrogatepass"))


def tiktoken_file() -> Path | None:
    """tiktoken's cached o200k_base file when it is there and whole, else None.

    tiktoken downloads a missing or damaged file on every load, with no timeout (behind a
    proxy that never answers, for ever). It is only ever asked for a file it already has.
    """
    # tiktoken's own rule for where the file lives (tiktoken/load.py, read_file_cached).
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            folder = os.environ[var]
            break
    else:
        folder = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not folder:
        return None  # caching switched off: every load would download
    path = Path(folder) / hashlib.sha1(O200K_URL.encode()).hexdigest()
    try:
        return path if hashlib.sha256(path.read_bytes()).hexdigest() == O200K_SHA256 else None
    except OSError:
        return None


@lru_cache(maxsize=1)
def _tiktoken_encoder() -> Callable[[str], int] | None:
    if tiktoken_file() is None:
        return None
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("o200k_base")
    except Exception:  # noqa: BLE001 - any loader failure: the byte bound counts instead
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def count_messages(messages: list[dict[str, str]], mode: str = "auto") -> tuple[int, str]:
    """Tokens in a chat prompt and the method used: ``tiktoken``, else ``chars`` (the UTF-8
    byte count, an upper bound)."""
    counter = _tiktoken_encoder() if mode == "auto" else None
    method = "tiktoken" if counter else "chars"
    count = counter or _byte_count
    total = PER_REPLY_TOKENS
    for message in messages:
        total += PER_MESSAGE_TOKENS + count(message.get("content") or "")
    return total, method


def estimate(messages: list[dict[str, str]], *, model: str, max_output_tokens: int,
             provider: Provider, response_format: dict[str, Any] | None = None,
             remember: bool = False) -> Estimate:
    """Reserve-able bound of a call: counted prompt x margin + ``max_tokens``, priced
    (``remember``: as ``lookup_price``).

    A structured-output schema travels with the request and is billed as input, so it is
    counted like one more message.
    """
    sent = list(messages)
    if response_format is not None:
        sent.append({"role": "system", "content": json.dumps(response_format, separators=(",", ":"))})
    counted, method = count_messages(sent, provider.tokenizer)
    # Other vendors' tokenizers split text differently from OpenAI's; the margin covers it.
    prompt_tokens = math.ceil(counted * provider.estimate_margin)
    price = lookup_price(model, provider, remember=remember)
    usd = None if price is None else prompt_tokens * price.input + max_output_tokens * price.output
    return Estimate(prompt_tokens, max_output_tokens, usd, method, price)


def cost_of(prompt_tokens: int, completion_tokens: int, price: Price | None) -> float | None:
    if price is None:
        return None
    return prompt_tokens * price.input + completion_tokens * price.output
