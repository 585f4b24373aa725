"""The starter config that ``mythline init`` writes, and the prompt copies beside it."""

from __future__ import annotations

from pathlib import Path

from . import files, prompts
from .config import DEFAULT_AGENT, OPENROUTER_BASE_URL, Alerts, Backoff, Breaker, Budget, Provider, Schedule, Sources
from .durations import format_duration
from .errors import UsageError
from .fleet.topics import DESCRIPTIONS, TOPICS


def _setting(assignment: str, comment: str) -> str:
    return f"# {assignment:<32} # {comment}"


# What `init --base-url` writes for a server on this machine (docs/local-models.md): a CPU
# takes minutes per research call, a timed-out request is never sent again (the server is
# still working on it), and a refused connection (server not started) is retried briefly.
LOCAL_PROVIDER = {"timeout": 1800.0, "max_attempts": 3, "max_retry_wait": 10.0, "max_retry_time": 60.0,
                  "max_output_tokens": 2048}
LOCAL_RUN_TIMEOUT = 4 * 3600.0


def _local_block(base_url: str, model: str) -> list[str]:
    lp = LOCAL_PROVIDER
    return [
        "[provider]",
        "# A server on this machine (see docs/local-models.md); these values are set, not defaults.",
        f'base_url = "{base_url}"',
        f'model = "{model}"',
        'api_key_env = ""                  # a local server needs no key',
        f'timeout = "{format_duration(lp["timeout"])}"                  # CPU inference: minutes per research call',
        f"max_attempts = {lp['max_attempts']}                   # a timed-out local request is never sent again",
        f'max_retry_wait = "{format_duration(lp["max_retry_wait"])}"',
        f'max_retry_time = "{format_duration(lp["max_retry_time"])}"            # a server that is not started fails fast',
        f"max_output_tokens = {lp['max_output_tokens']}          # must fit the server's context with the prompt",
        '# structured_outputs = "auto"     # JSON Schema where taken, else the schema in the server field',
        '# context_length = "auto"         # the context in tokens; auto: asked from the server (/props, /v1/models)',
        '# local = "auto"                  # one request at a time across the fleet; auto: true for localhost',
        "# temperature = 0",
        '# tokenizer = "auto"',
        "# estimate_margin = 1.25",
        "",
        "# A local model costs nothing: prices at 0 keep the USD caps meaningful for the rest.",
        f'[provider.prices."{model}"]',
        "input_per_million = 0",
        "output_per_million = 0",
    ]


def starter_text(*, base_url: str | None = None, model: str | None = None) -> str:
    """The commented config; with ``base_url`` of a local server, its provider block set for it."""
    p, b, a = Provider(), Budget(), DEFAULT_AGENT
    local = base_url is not None and Provider(base_url=base_url).is_local
    assert a.interval is not None and a.grace is not None and a.refresh_after is not None  # the defaults set every field
    bo, br, al, sc, so = Backoff(), Breaker(), Alerts(), Schedule(), Sources()
    lines = [
        "# Mythline configuration. Every setting is shown with its default; uncomment to change.",
        "# Precedence: command-line flag > environment (MYTHLINE_MODEL, MYTHLINE_BASE_URL) > this file > default.",
        "",
        "# Editable copies of the prompts (written by `mythline init`); delete a file to use the built-in one.",
        'prompts_dir = "prompts"',
        "",
    ]
    provider = _local_block(base_url, model or p.model) if local and base_url else [
        "[provider]",
        (f'base_url = "{base_url}"' if base_url else
         f'# base_url = "{OPENROUTER_BASE_URL}"   # any OpenAI-compatible API, e.g. "http://localhost:11434/v1"'),
        f'model = "{model}"' if model else f'# model = "{p.model}"',
        f'# api_key_env = "{p.api_key_env}"        # name of the variable holding the key; "" for no key',
        f'# timeout = "{format_duration(p.timeout)}"                 # per request',
        f"# temperature = {p.temperature:g}",
        f"# max_output_tokens = {p.max_output_tokens}         # per call; also what the budget reserves for output",
        f'# structured_outputs = "{p.structured_outputs}"          # JSON Schema where the server takes it, else '
        'json_object_schema, else json_object',
        f"# max_attempts = {p.max_attempts}                   # HTTP attempts per call (retries on 408/409/429/5xx/timeouts)",
        f'# max_retry_wait = "{format_duration(p.max_retry_wait)}"            # longest single wait between attempts',
        f'# max_retry_time = "{format_duration(p.max_retry_time)}"            # longest total time spent retrying one call',
        f'# tokenizer = "{p.tokenizer}"               # "chars" skips tiktoken (a conservative byte count)',
        f"# estimate_margin = {p.estimate_margin:g}          # prompt-token estimate multiplier (other vendors' tokenizers)",
        '# context_length = "auto"         # the model\'s context in tokens; auto: asked from a local server',
        '# local = "auto"                  # one request at a time across the fleet; auto: true for localhost',
        '# requests_per_minute = "none"   # for the whole fleet; the provider\'s x-ratelimit headers can lower it',
        '# tokens_per_minute = "none"',
        "",
        "# Prices for models the bundled price table does not know (USD per million tokens):",
        '# [provider.prices."my-local-model"]',
        "# input_per_million = 0",
        "# output_per_million = 0",
    ]
    run_timeout = LOCAL_RUN_TIMEOUT if local else b.run_timeout
    lines += provider + [
        "",
        "[budget]",
        f'# timezone = "{b.timezone}"                # when the daily window starts; an IANA name like "Europe/Berlin"',
        f"# daily_usd = {b.daily_usd:g}                   # the whole fleet, per day; \"none\" for no cap",
        f"# daily_tokens = {b.daily_tokens}",
        '# monthly_usd = "none"',
        '# monthly_tokens = "none"',
        (f'run_timeout = "{format_duration(run_timeout)}"                # slow local calls: a run may take hours'
         if local else f'# run_timeout = "{format_duration(run_timeout)}"              # older: treated as hung (1m..31d)'),
        f'# pace = "{b.pace}"                    # "even": a day cap is spent no faster than the day passes',
        f"# burst = {b.burst:g}                     # with pace = \"even\": this share of a day cap is always allowed",
        f"# priority_headroom = {b.priority_headroom:g}         # the last share of a fleet cap only the highest priority spends",
        "",
        "# Settings every agent gets unless its own [agents.NAME] table says otherwise.",
        "[defaults]",
        "# enabled = true",
        f'# interval = "{format_duration(a.interval)}"                 # how often the scheduler runs each agent (1m..31d)',
        f'# grace = "{format_duration(a.grace)}"                    # late beyond this -> status shows "down"',
        f"# max_attempts = {a.max_attempts}                   # failed validations before a topic is quarantined",
        f"# min_score = {a.min_score:g}                    # audit score needed to store a record",
        f"# min_sources = {a.min_sources}",
        f"# daily_usd = {a.daily_usd:g}                    # per agent, per day",
        f"# daily_tokens = {a.daily_tokens}",
        f'# refresh_after = "{format_duration(a.refresh_after) if a.refresh_after is not None else "none"}"              # once the queue is empty, research older records again ("none": never)',
        f"# max_proposals = {a.max_proposals}                  # subjects a run may propose to other agents' queues",
        f'# min_tier = "{a.min_tier}"              # at least one cited source this good (official/primary/secondary/tertiary)',
        f"# web_search = {str(a.web_search).lower()}               # OpenRouter's web plugin as a source (paid per result)",
        '# audit_model = "openai/gpt-4o"   # audits the records; default: the research model (a model prefers its own answers)',
        '# key_fields = []                 # fields, besides summary, each record must back with a quote',
        '# sources = ["https://warcraft.wiki.gg/wiki/{title}", "notes/*.md"]   # default: the wiki pages of each agent\'s kind; [] = none',
        f"# priority = {a.priority}                       # higher: keeps running when the fleet cap is nearly spent",
        f"# reserve = {a.reserve:g}                        # a share of each fleet cap only this agent may spend",
        "",
        "# Retrieval: how source pages are fetched, cached, tiered and quoted (see docs/sources.md).",
        "[sources]",
        _setting(f'timeout = "{format_duration(so.timeout)}"', "the longest wait for one page"),
        _setting(f"max_bytes = {so.max_bytes}", "a larger page is skipped"),
        _setting(f"max_redirects = {so.max_redirects}", "more is a dropped source"),
        _setting(f'host_delay = "{format_duration(so.host_delay)}"', "between two requests to one host, fleet-wide"),
        _setting(f'cache_max_age = "{format_duration(so.cache_max_age)}"', "younger cached pages are not asked for"),
        _setting(f'contact = "{so.contact}"', "added to the User-Agent: a URL or e-mail for site operators"),
        _setting(f"max_excerpt_chars = {so.max_excerpt_chars}", "of each source's text in the prompts"),
        _setting(f"summarise = {str(so.summarise).lower()}", "a longer source is summarised chunk by chunk (paid calls)"),
        _setting(f"chunk_chars = {so.chunk_chars}", "characters per summarised chunk"),
        _setting(f"max_chunks = {so.max_chunks}", "chunks summarised per source, at most"),
        _setting(f"evidence_threshold = {so.evidence_threshold:g}", "fuzzy match (0-100) a quote needs in its source"),
        _setting(f"min_quote_chars = {so.min_quote_chars}", "a shorter quote proves nothing"),
        "",
        "# Tiers by domain (a domain covers its subdomains; unknown domains are tertiary; \"local\" means your own files).",
        "[sources.tiers]",
        *[f'# "{d}" = "{t}"' for d, t in so.tiers.items()],
        "",
        "# A record's confidence is capped at the weight of its best supporting source's tier.",
        "[sources.weights]",
        *[f"# {t} = {w:g}" for t, w in so.weights.items()],
        "",
        "[sources.web_search]",
        _setting(f"max_results = {so.web_search.max_results}", "results per search"),
        _setting(f"usd_per_result = {so.web_search.usd_per_result:g}", "reserved in the budget before the search"),
        "",
        "# How long an agent waits after a failed run: min(max, base * 2^(failures-1)), +/- jitter.",
        "[backoff]",
        _setting(f'base = "{format_duration(bo.base)}"', "first wait; 0 for no backoff"),
        _setting(f'max = "{format_duration(bo.max)}"', "longest wait"),
        _setting(f"jitter = {bo.jitter:g}", "+/- this share, so agents that failed together retry apart"),
        "",
        "# The provider's circuit breaker, shared by the whole fleet.",
        "[breaker]",
        _setting(f"failures = {br.failures}", "provider failures in a row, across the fleet, that open it"),
        _setting(f'cooldown = "{format_duration(br.cooldown)}"', "every agent skips its calls; then one probe"),
        "",
        "# Alerts: always an event line; optionally a webhook (Slack, Discord) and a command of your own.",
        "[alerts]",
        _setting(f"warn_at = {al.warn_at:g}", "budget-warn when spend reaches this share of a cap"),
        _setting(f"consecutive_failures = {al.consecutive_failures}", "a failures alert after this many failed runs"),
        _setting(f'webhook_url_env = "{al.webhook_url_env}"', "the variable holding the webhook URL (a token)"),
        _setting(f'webhook_url = "{al.webhook_url}"', "works, but the token then sits in this file"),
        _setting(f'command = "{al.command}"', "a shell command; the alert is in its MYTHLINE_ALERT_* variables"),
        _setting(f'timeout = "{format_duration(al.timeout)}"', "per delivery attempt (0.1s..1d)"),
        _setting(f"retries = {al.retries}", "extra attempts after a connection error, a 5xx or a 429"),
        "",
        "# What `mythline schedule` generates.",
        "[schedule]",
        _setting(f'mailto = "{sc.mailto}"', "MAILTO of the crontab block; empty: cron mails the crontab's owner"),
        _setting(f'windows_logon = "{sc.windows_logon}"', "Task Scheduler logon: InteractiveToken, S4U or Password"),
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


def write_starter(path: Path, *, force: bool, base_url: str | None = None, model: str | None = None) -> list[Path]:
    """Write the config and prompt copies; refuse to overwrite anything without ``force``."""
    prompt_dir = path.parent / "prompts"
    targets = {path: starter_text(base_url=base_url, model=model)}
    for name in prompts.NAMES:
        targets[prompt_dir / f"{name}.md"] = prompts.packaged(name)
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists; use --force to overwrite"
                         + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""))
    for target, text in targets.items():
        files.write_bytes_atomic(target, text.encode("utf-8"))
    return list(targets)
