"""The starter config that ``mythline init`` writes, and the prompt copies beside it."""

from __future__ import annotations

from pathlib import Path

from . import files, prompts
from .config import DEFAULT_AGENT, OPENROUTER_BASE_URL, Budget, Provider
from .durations import format_duration
from .errors import UsageError
from .fleet.topics import DESCRIPTIONS, TOPICS


def starter_text() -> str:
    p, b, a = Provider(), Budget(), DEFAULT_AGENT
    lines = [
        "# Mythline configuration. Every setting is shown with its default; uncomment to change.",
        "# Precedence: command-line flag > environment (MYTHLINE_MODEL, MYTHLINE_BASE_URL) > this file > default.",
        "",
        "# Editable copies of the prompts (written by `mythline init`); delete a file to use the built-in one.",
        'prompts_dir = "prompts"',
        "",
        "[provider]",
        f'# base_url = "{OPENROUTER_BASE_URL}"   # any OpenAI-compatible API, e.g. "http://localhost:11434/v1"',
        f'# model = "{p.model}"',
        f'# api_key_env = "{p.api_key_env}"        # name of the variable holding the key; "" for no key',
        f'# timeout = "{format_duration(p.timeout)}"                 # per request',
        f"# temperature = {p.temperature:g}",
        f"# max_output_tokens = {p.max_output_tokens}         # per call; also what the budget reserves for output",
        f'# structured_outputs = "{p.structured_outputs}"   # or "json_object" for models without JSON Schema support',
        f"# max_attempts = {p.max_attempts}                   # HTTP attempts per call (retries on 408/409/429/5xx/timeouts)",
        f'# max_retry_wait = "{format_duration(p.max_retry_wait)}"            # longest single wait between attempts',
        f'# max_retry_time = "{format_duration(p.max_retry_time)}"            # longest total time spent retrying one call',
        f'# tokenizer = "{p.tokenizer}"               # "chars" skips tiktoken (a conservative byte count)',
        f"# estimate_margin = {p.estimate_margin:g}          # prompt-token estimate multiplier (other vendors' tokenizers)",
        "",
        "# Prices for models the bundled price table does not know (USD per million tokens):",
        '# [provider.prices."my-local-model"]',
        "# input_per_million = 0",
        "# output_per_million = 0",
        "",
        "[budget]",
        f'# timezone = "{b.timezone}"                # when the daily window starts; an IANA name like "Europe/Berlin"',
        f"# daily_usd = {b.daily_usd:g}                   # the whole fleet, per day; \"none\" for no cap",
        f"# daily_tokens = {b.daily_tokens}",
        '# monthly_usd = "none"',
        '# monthly_tokens = "none"',
        f'# run_timeout = "{format_duration(b.run_timeout)}"              # a run older than this is treated as hung',
        "",
        "# Settings every agent gets unless its own [agents.NAME] table says otherwise.",
        "[defaults]",
        f'# interval = "{format_duration(a.interval)}"                 # how often the scheduler runs each agent (1m..31d)',
        f'# grace = "{format_duration(a.grace)}"                    # late beyond this -> status shows "down"',
        f"# max_attempts = {a.max_attempts}                   # failed validations before a topic is quarantined",
        f"# min_score = {a.min_score:g}                    # audit score needed to store a record",
        f"# min_sources = {a.min_sources}",
        f"# daily_usd = {a.daily_usd:g}                    # per agent, per day",
        f"# daily_tokens = {a.daily_tokens}",
        "",
        "# The fleet. Uncomment a table to override its settings or its topic queue.",
    ]
    for name in TOPICS:
        lines += [
            "",
            f"# {DESCRIPTIONS[name]}",
            f"# [agents.{name}]",
            '# extra_topics = ["..."]        # appended to the built-in queue; `topics = [...]` replaces it',
        ]
    lines += [
        "",
        "# Your own agents: any other name (lowercase letters, digits and '-') is a custom agent. Its kind,",
        "# one of the agents above, gives its record schema and store folder; it needs its own topics.",
        "# Remove the '#' to use this one:",
        "#[agents.eastern-zones]",
        '#kind = "world-zones"',
        '#topics = ["Dun Morogh", "Redridge Mountains"]',
        '#description = "Zones of the Eastern Kingdoms."   # optional; default: the description of its kind',
    ]
    return "\n".join(lines) + "\n"


def write_starter(path: Path, *, force: bool) -> list[Path]:
    """Write the config and prompt copies; refuse to overwrite anything without ``force``."""
    prompt_dir = path.parent / "prompts"
    targets = {path: starter_text()}
    for name in prompts.NAMES:
        targets[prompt_dir / f"{name}.md"] = prompts.packaged(name)
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists; use --force to overwrite"
                         + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""))
    for target, text in targets.items():
        files.write_bytes_atomic(target, text.encode("utf-8"))
    return list(targets)
