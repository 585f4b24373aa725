"""``mythline.toml`` as pydantic models, its lookup, and the built-in default fleet.

Precedence for a setting: command-line flag > environment > file > built-in default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from . import paths
from .agent import Agent, name_problem
from .durations import in_range, parse_duration
from .errors import ConfigError, UsageError
from .fleet.topics import DESCRIPTIONS, DOMAINS, KEY_FIELDS, SOURCES, TOPICS
from .paths import locate_config
from .tiers import DEFAULT_DOMAINS, DEFAULT_WEIGHTS, TIERS, Tier

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_MODEL = "openai/gpt-4o-mini"
CONFIG_NAME = paths.CONFIG_NAME

MIN_INTERVAL = 60.0
MAX_INTERVAL = 31 * 86400.0


def _duration(value: Any) -> float:
    return parse_duration(value)


def _interval(value: Any) -> float:
    seconds = parse_duration(value)
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ValueError("an interval must be between 1m and 31d")
    return seconds


def _cap(value: Any) -> Any:
    # TOML has no null: "none" switches a cap off. Zero or negative is a mistake, not "off".
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    if isinstance(value, bool):
        raise ValueError("a cap is a positive number, or \"none\" for no cap")
    if isinstance(value, (int, float)) and value <= 0:
        raise ValueError("a cap must be greater than 0 (write \"none\" for no cap)")
    return value


def _auto(value: Any) -> Any:
    # TOML has no null: "auto" is the unset value of a setting mythline works out itself.
    return None if isinstance(value, str) and value.strip().lower() == "auto" else value


def _shorten(name: str, limit: int = 60) -> str:
    """``repr`` of a user-supplied name, cut short so an error stays one readable line."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _name_list(names: list[str], limit: int = 12) -> str:
    """Agent names for a message: all of a small fleet, the first few of a big one."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:10]) + f" and {len(names) - 10} more (see: mythline agents)"


def _unknown_agent(name: str) -> str:
    """Why ``[agents.NAME]`` without ``kind`` is refused, and how to fix it either way."""
    import difflib

    close = difflib.get_close_matches(name, list(TOPICS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (f"unknown agent {_shorten(name)}{hint}: the built-in fleet is {', '.join(TOPICS)}; "
            f'to add your own agent, give its table kind = "<one of those>" and its own topics = [...]')


def _between(low: float, high: float, why: str = "") -> BeforeValidator:
    """A duration where zero (or a few seconds) cannot work: each call would time out at once,
    each run would look hung."""
    return BeforeValidator(lambda value: in_range(value, low, high, why))


def _refresh(value: Any) -> float | None:
    # TOML has no null: "none" switches refreshing off.
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    return in_range(value, 3600, 366 * 86400, "how old a record gets before it is researched again")


Duration = Annotated[float, BeforeValidator(_duration)]
RefreshAfter = Annotated[float | None, BeforeValidator(_refresh)]
Interval = Annotated[float, BeforeValidator(_interval)]
UsdCap = Annotated[float | None, BeforeValidator(_cap)]
TokenCap = Annotated[int | None, BeforeValidator(_cap)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)




class WebSearch(_Model):
    """OpenRouter's web plugin: its results become sources; each result is paid and reserved."""

    max_results: int = Field(default=3, ge=1, le=10)
    # OpenRouter's price for its Exa-backed search: $4 per 1000 results.
    usd_per_result: float = Field(default=0.004, ge=0)


class Sources(_Model):
    """Retrieval for the whole fleet: how pages are fetched, cached, tiered and quoted."""

    timeout: Annotated[float, _between(1, 600, "the longest wait for one page")] = 20.0
    max_bytes: int = Field(default=2_000_000, ge=10_000, le=100_000_000)
    max_redirects: int = Field(default=5, ge=0, le=20)
    host_delay: Duration = 2.0
    cache_max_age: Duration = 86400.0
    contact: str = Field(default="", max_length=200)
    max_excerpt_chars: int = Field(default=6000, ge=200, le=200_000)
    # A longer source is summarised map-reduce style, one paid, checkpointed call per chunk.
    summarise: bool = True
    chunk_chars: int = Field(default=12000, ge=1000, le=500_000)
    max_chunks: int = Field(default=8, ge=1, le=100)
    evidence_threshold: float = Field(default=95.0, ge=50, le=100)
    min_quote_chars: int = Field(default=20, ge=1, le=1000)
    tiers: dict[str, Tier] = dict(DEFAULT_DOMAINS)
    weights: dict[Tier, float] = dict(DEFAULT_WEIGHTS)
    web_search: WebSearch = WebSearch()

    @field_validator("tiers")
    @classmethod
    def _with_defaults(cls, value: dict[str, str]) -> dict[str, str]:
        # The owner's table adds to and overrides the built-in one rather than replacing it.
        return {**DEFAULT_DOMAINS, **value}

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[Tier, float]) -> dict[Tier, float]:
        merged: dict[Tier, float] = {**DEFAULT_WEIGHTS, **value}
        for tier, weight in merged.items():
            if not 0 <= weight <= 1:
                raise ValueError(f"{tier}: a weight is between 0 and 1")
        order = [merged[t] for t in TIERS]
        if order != sorted(order, reverse=True):
            raise ValueError("weights must not rise from official to tertiary")
        return merged


class Prices(_Model):
    """USD per million tokens, for a model the bundled price table does not know."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class Provider(_Model):
    """Where chat completions go and how they are called."""

    base_url: str = OPENROUTER_BASE_URL
    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    api_key_env: str = "OPENROUTER_API_KEY"
    timeout: Annotated[float, _between(1, 86400, "the longest wait for one answer")] = 120.0
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_output_tokens: int = Field(default=4096, gt=0, le=1_000_000)
    structured_outputs: Literal["auto", "json_schema", "json_object_schema", "json_object"] = "auto"
    max_attempts: int = Field(default=5, ge=1, le=20)
    max_retry_wait: Duration = 60.0
    max_retry_time: Duration = 300.0
    tokenizer: Literal["auto", "chars"] = "auto"
    estimate_margin: float = Field(default=1.25, ge=1, le=10)
    prices: dict[str, Prices] = {}
    # Shared by every process of the fleet (see ratelimit.py); the provider's own headers
    # can only lower them.
    requests_per_minute: TokenCap = None
    tokens_per_minute: TokenCap = None
    # Local inference (docs/local-models.md). context_length: the model's context in tokens;
    # "auto", a local server is asked for it. local: one request at a time across the fleet and
    # no retry of a timed-out request; "auto", true for a loopback base_url.
    context_length: Annotated[int | None, BeforeValidator(_auto)] = Field(default=None, gt=0, le=100_000_000)
    local: Annotated[bool | None, BeforeValidator(_auto)] = None

    @property
    def is_local(self) -> bool:
        if self.local is not None:
            return self.local
        from urllib.parse import urlsplit

        host = (urlsplit(self.base_url).hostname or "").lower()
        return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.endswith(".localhost")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        # httpx would send user:password@ as a Basic Authorization that replaces the Bearer
        # key, and a server that echoes it would put it in every log. The value is never quoted.
        if "@" in value.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("carries a user name or password (user:password@host); remove it: the API key "
                             "goes in the variable named by provider.api_key_env and is sent as a Bearer token")
        return value.rstrip("/")


class Budget(_Model):
    """Fleet-wide caps and the budget window."""

    timezone: str = "local"
    daily_usd: UsdCap = 5.0
    daily_tokens: TokenCap = 5_000_000
    monthly_usd: UsdCap = None
    monthly_tokens: TokenCap = None
    run_timeout: Annotated[float, _between(60, 31 * 86400, "a run older than this is treated as hung")] = 1800.0
    # "even": a day cap is spent no faster than the day passes, plus `burst` of it at any time.
    pace: Literal["none", "even"] = "none"
    burst: float = Field(default=0.1, ge=0, le=1)
    # The last share of a fleet cap that only the highest-priority agents may spend.
    priority_headroom: float = Field(default=0.2, ge=0, le=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        if value != "local":
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {value!r}; use an IANA name like 'Europe/Berlin' or 'local'") from None
        return value


class AgentDefaults(_Model):
    """Settings every agent has; ``[defaults]`` holds the fleet's, ``[agents.NAME]`` overrides."""

    enabled: bool | None = None
    interval: Interval | None = None
    grace: Duration | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=20)
    min_score: float | None = Field(default=None, ge=0, le=1)
    min_sources: int | None = Field(default=None, ge=0, le=50)
    daily_usd: UsdCap = None
    daily_tokens: TokenCap = None
    model: str | None = None
    topics: list[str] | None = None
    extra_topics: list[str] | None = None
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    # A share of every fleet cap that only this agent may spend.
    reserve: float | None = Field(default=None, ge=0, le=1)
    refresh_after: RefreshAfter = None
    max_proposals: int | None = Field(default=None, ge=0, le=100)
    # Retrieval: URL templates and local paths or globs; unset = the built-in templates of the
    # agent's kind, [] = none (the agent researches from the model's memory, ungrounded).
    sources: list[Annotated[str, Field(min_length=1, max_length=2000)]] | None = None
    key_fields: list[str] | None = None
    min_tier: Tier | None = None
    web_search: bool | None = None
    # The model that audits the record; unset = the research model (doctor warns: a model
    # prefers its own answers).
    audit_model: str | None = Field(default=None, min_length=1)

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: list[str] | None) -> list[str] | None:
        return _no_userinfo(value)


def _no_userinfo(specs: list[str] | None) -> list[str] | None:
    """``specs``, unless a URL among them carries credentials."""
    for spec in specs or ():
        if spec.startswith(("http://", "https://")) and "@" in spec.split("://", 1)[1].split("/", 1)[0]:
            # It would reach the page cache, the events and the store with every source.
            raise ValueError("a source URL carries a user name or password (user:password@host); "
                             "use a URL without one")
    return specs



class AgentSettings(AgentDefaults):
    """One ``[agents.NAME]`` table: the settings, plus what only one agent can say about itself."""

    # A built-in agent's name: the knowledge area (record schema, store domain). Required for
    # an agent that is not built in; a built-in agent may only name itself.
    kind: str | None = None
    description: str | None = Field(default=None, min_length=1, max_length=2000)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str | None) -> str | None:
        if value is not None and value not in TOPICS:
            raise ValueError(f"unknown kind {_shorten(value)}; use one of: {', '.join(TOPICS)}")
        return value


DEFAULT_AGENT = AgentDefaults(
    enabled=True, interval=1800.0, grace=900.0, max_attempts=3, min_score=0.7,
    min_sources=2, daily_usd=0.5, daily_tokens=500_000, refresh_after=30 * 86400.0, max_proposals=5,
    min_tier="secondary", web_search=False, priority=0, reserve=0.0,
)


class Backoff(_Model):
    """How long an agent waits after a failed cycle: base * 2^(n-1), with jitter, capped."""

    base: Duration = 300.0
    max: Duration = 6 * 3600.0
    jitter: float = Field(default=0.2, ge=0, le=1)


class Breaker(_Model):
    """The provider's circuit breaker, shared by the whole fleet."""

    failures: int = Field(default=5, ge=1, le=1000)
    cooldown: Annotated[float, _between(1, 31 * 86400, "how long the fleet waits before a probe")] = 600.0


class Alerts(_Model):
    """Who hears about trouble, and when."""

    # One share of a cap or several ([0.5, 0.8, 0.95]); each crossing alerts once per window.
    warn_at: Annotated[float, Field(gt=0, le=1)] | Annotated[list[Annotated[float, Field(gt=0, le=1)]],
                                                             Field(min_length=1, max_length=20)] = 0.8
    consecutive_failures: int = Field(default=3, ge=1, le=1000)
    # A Slack or Discord webhook URL carries a token: prefer naming a variable that holds it.
    webhook_url_env: str = ""
    webhook_url: str = ""
    command: str = ""
    timeout: Annotated[float, _between(0.1, 86400, "the longest wait for a webhook or command")] = 10.0
    retries: int = Field(default=2, ge=0, le=10)

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class Schedule(_Model):
    """What `mythline schedule` generates."""

    mailto: str = ""
    windows_logon: Literal["InteractiveToken", "S4U", "Password"] = "InteractiveToken"


class Config(_Model):
    """The whole of ``mythline.toml``."""

    provider: Provider = Provider()
    budget: Budget = Budget()
    defaults: AgentDefaults = AgentDefaults()
    agents: dict[str, AgentSettings] = {}
    prompts_dir: str | None = None
    backoff: Backoff = Backoff()
    breaker: Breaker = Breaker()
    alerts: Alerts = Alerts()
    schedule: Schedule = Schedule()
    sources: Sources = Sources()
    # The shared state's PostgreSQL URL (MYTHLINE_STATE wins); unset: the state home's files.
    state: str | None = None

    @field_validator("agents", mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        # Before the tables are validated: a misspelt agent is the problem, not its keys. A
        # name that is not built in must be a safe file name, and its table must say `kind`.
        if isinstance(value, dict):
            for name, table in value.items():
                if name in TOPICS:
                    continue
                problem = name_problem(name)
                if problem is not None:
                    raise ValueError(f"bad agent name {_shorten(name)}: {problem}")
                if not (isinstance(table, dict) and "kind" in table):
                    raise ValueError(_unknown_agent(name))
        return value

    def agent_problem(self) -> tuple[str, str] | None:
        """(key, problem) of the first custom-agent rule a valid file still breaks, or None."""
        from .fleet.schemas import RECORD_MODELS

        for where, table in (("defaults", self.defaults), *((f"agents.{n}", t) for n, t in self.agents.items())):
            kinds = [getattr(table, "kind", None) or where.removeprefix("agents.")] if where != "defaults" else list(TOPICS)
            for key in table.key_fields or ():
                if not any(key in RECORD_MODELS[k].model_fields for k in kinds if k in RECORD_MODELS):
                    return (f"{where}.key_fields", f"{key!r} is not a field of the record; name a text or list field "
                            f"of the {kinds[0] if len(kinds) == 1 else 'agents'}' schema")
        names = list(TOPICS) + [n for n in self.agents if n not in TOPICS]
        default = self.defaults.reserve or 0.0
        total = 0.0
        for n in names:
            own = self.agents[n].reserve if n in self.agents else None
            total += own if own is not None else default
        if total > 1 + 1e-9:
            # Shares of one fleet cap: more than all of it would leave some reserve unspendable.
            return ("agents.*.reserve", f"the agents' reserves add up to {total:.0%} of the fleet "
                                        "cap; keep their sum at most 1 (100%)")
        for name, table in self.agents.items():
            if name in TOPICS:
                if table.kind not in (None, name):
                    return (f"agents.{name}.kind",
                            f"{name} is a built-in agent, always of its own kind; for your own {table.kind} "
                            f"topics add a custom agent, e.g. [agents.my-{DOMAINS[table.kind]}] "
                            f'with kind = "{table.kind}" and topics = [...]')
            elif table.topics is None:
                # Copying the built-in queue would pay twice for research already being done.
                return (f"agents.{name}",
                        f"a custom agent needs its own topics = [...] (it does not share the queue of "
                        f"{table.kind}, which would research the same topics twice)")
        return None


@dataclass
class Settings:
    """A loaded configuration: the models, where it came from, and resolved agents."""

    config: Config
    source: Path | None
    # A model from --model or MYTHLINE_MODEL: it beats every file setting, [agents.NAME] model included.
    model_override: str | None = None
    _memo: tuple[Any, str | None, list[Agent]] | None = field(default=None, init=False, repr=False, compare=False)
    # The lookup step that found ``source`` (a key of ``FOUND_BY``); None for the built-in defaults.
    found_by: str | None = None

    def describe_source(self) -> str:
        """Which config is in use and why, in one phrase (for ``doctor`` and ``run --dry-run``)."""
        if self.source is None:
            return (f"built-in defaults (no --config, no MYTHLINE_CONFIG, no {CONFIG_NAME} in the working "
                    f"directory {Path.cwd()} or in {paths.user_config_dir()}; create one with: mythline init)")
        why = FOUND_BY.get(self.found_by or "")
        return f"{self.source} ({why})" if why else str(self.source)

    @property
    def provider(self) -> Provider:
        return self.config.provider

    @property
    def budget(self) -> Budget:
        return self.config.budget

    @property
    def agent_names(self) -> list[str]:
        """The built-in agents in their order, then the custom ones in the file's order."""
        return list(TOPICS) + [name for name in self.config.agents if name not in TOPICS]

    def agent(self, name: str) -> Agent:
        if name not in TOPICS and name not in self.config.agents:
            import difflib

            close = difflib.get_close_matches(name, self.agent_names, n=1, cutoff=0.8)  # a typo, not a guess
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"unknown agent {_shorten(name)}{hint}; the fleet is: {_name_list(self.agent_names)} "
                             "(see: mythline status)")
        return self._resolve(name, self._base())

    def agents(self) -> list[Agent]:
        # status, the ledger report and the settings cache each ask in one command: with a
        # thousand agents, resolving them once matters. Keyed by the config object itself
        # (replaced, never edited in place, when flags apply) and the model override.
        memo = self._memo
        if memo is None or memo[0] is not self.config or memo[1] != self.model_override:
            base = self._base()
            memo = self._memo = (self.config, self.model_override,
                                 [self._resolve(name, base) for name in self.agent_names])
        return list(memo[2])

    def _base(self) -> dict[str, Any]:
        """The built-in defaults with ``[defaults]`` over them: every agent's starting point."""
        defaults = self.config.defaults
        return DEFAULT_AGENT.model_dump() | {k: v for k, v in defaults.model_dump().items()
                                             if k in defaults.model_fields_set}

    def _resolve(self, name: str, base: dict[str, Any]) -> Agent:
        table = self.config.agents.get(name)
        merged = dict(base)
        if table is not None:
            merged.update({k: v for k, v in table.model_dump().items() if k in table.model_fields_set})
        kind = merged.get("kind") or name
        # `topics = []` replaces the queue with an empty one; only an unset list means the built-in
        # queue (a custom agent always has its own list: parse_config sees to that).
        queue = merged.get("topics")
        topics = tuple(TOPICS.get(name, ()) if queue is None else queue) + tuple(merged.get("extra_topics") or ())
        # A topic listed twice is one topic.
        topics = tuple(dict.fromkeys(t.strip() for t in topics if t.strip()))
        return Agent(
            name=name, kind=kind, domain=DOMAINS[kind],
            description=merged.get("description") or DESCRIPTIONS[kind],
            enabled=merged["enabled"], interval=merged["interval"], grace=merged["grace"],
            max_attempts=merged["max_attempts"], min_score=merged["min_score"],
            min_sources=merged["min_sources"], daily_usd=merged["daily_usd"],
            daily_tokens=merged["daily_tokens"],
            model=self.model_override or merged.get("model") or self.provider.model,
            priority=merged.get("priority") or 0, reserve=merged.get("reserve") or 0.0,
            topics=topics, refresh_after=merged.get("refresh_after"), max_proposals=merged["max_proposals"],
            sources=tuple(SOURCES.get(kind, ()) if merged.get("sources") is None else merged["sources"]),
            key_fields=tuple(dict.fromkeys(("summary", *KEY_FIELDS.get(kind, ()), *(merged.get("key_fields") or ())))),
            min_tier=merged.get("min_tier") or "secondary", web_search=bool(merged.get("web_search")),
            audit_model=merged.get("audit_model") or "",
        )

    def prompts_dir(self) -> Path | None:
        raw = self.config.prompts_dir
        if not raw:
            return None
        path = Path(raw).expanduser()
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path


def find_config(explicit: Path | None) -> Path | None:
    """The config file to use (see ``locate_config``), or None for the built-in defaults."""
    return locate_config(explicit)[0]


# What each lookup step means to someone reading `doctor` or `run --dry-run`.
FOUND_BY = {
    "--config": "given with --config",
    "MYTHLINE_CONFIG": "from MYTHLINE_CONFIG",
    # The one step that depends on where the command was started: say so where it is shown.
    "working directory": ("./mythline.toml in the working directory; a run started elsewhere, as cron "
                          "starts it, would not find it: pass --config or set MYTHLINE_CONFIG"),
    "user config dir": "the user config dir",
}


def _env_overrides(data: dict[str, Any]) -> dict[str, Any]:
    provider = dict(data.get("provider") or {})
    for env, key in (("MYTHLINE_BASE_URL", "base_url"), ("MYTHLINE_MODEL", "model")):
        value = os.environ.get(env)
        if value:
            provider[key] = value
    if provider:
        data = {**data, "provider": provider}
    return data


def _describe(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
    else:
        msg = err["msg"]
        if "input" in err and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return key, msg


def parse_config(data: dict[str, Any], source: Path | None = None) -> Settings:
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        key, msg = _describe(exc)
        raise ConfigError(msg, path=source, key=key) from None
    problem = config.agent_problem()
    if problem is not None:
        raise ConfigError(problem[1], path=source, key=problem[0])
    # The environment is checked apart from the file, so a bad variable is not blamed on the file.
    env = _env_overrides({})
    if env:
        try:
            provider = Provider.model_validate(config.provider.model_dump() | env["provider"])
        except ValidationError as exc:
            field = str(exc.errors()[0]["loc"][0])
            var = {"base_url": "MYTHLINE_BASE_URL", "model": "MYTHLINE_MODEL"}.get(field, field)
            raise ConfigError(_describe(exc)[1], key=var) from None
        config = config.model_copy(update={"provider": provider})
    return Settings(config=config, source=source, model_override=env.get("provider", {}).get("model"))


def load_settings(explicit: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Find, read and validate the configuration; flags in ``overrides`` win over everything."""
    path, found_by = locate_config(explicit)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read ({exc.strerror})", path=path) from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError("not UTF-8 text; save it as UTF-8", path=path) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML ({exc})", path=path) from None
    settings = parse_config(data, path)
    settings.found_by = found_by
    from .statedocs import use

    use(settings)  # its `state` names where the per-agent documents are
    if overrides:
        merged = settings.config.provider.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        try:
            provider = Provider.model_validate(merged)
        except ValidationError as exc:
            key, msg = _describe(exc)
            raise ConfigError(msg, key=f"--{key.replace('_', '-')}") from None
        settings.config = settings.config.model_copy(update={"provider": provider})
        if overrides.get("model") is not None:
            settings.model_override = provider.model
    return settings
