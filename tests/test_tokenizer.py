"""The offline token count is an upper bound for every script, and the tokenizer never reaches the network."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import threading
import warnings
from pathlib import Path

import pytest

from mythline_cli import pricing
from mythline_cli.config import parse_config

from helpers import KEY_ENV, TEST_KEY, lore_responder, mythline, write_tiktoken_cache

AGENT = "world-npcs"


def _corpus() -> dict[str, str]:
    rng = random.Random(10)
    english = ("Thrall, son of Durotan, led the orcs out of the internment camps and founded Durotar. "
               "He was raised as a gladiator by Aedelas Blackmoore at Durnholde Keep. ") * 20
    blob = bytes(rng.randrange(256) for _ in range(3000))
    return {
        "english": english,
        "chinese": "萨尔是杜隆坦之子，他带领兽人离开收容所，建立了杜隆塔尔。" * 40,
        "japanese": "スラルはデュロタンの息子で、オークを収容所から解放した。かつて剣闘士だった。" * 40,
        "korean": "스랄은 듀로탄의 아들로 오크들을 수용소에서 해방시키고 듀로타를 세웠다. " * 40,
        "russian": "Тралл, сын Дуротана, вывел орков из лагерей и основал Дуротар. " * 40,
        "arabic": "ثرال، ابن دوروتان، قاد الأورك خارج معسكرات الاعتقال وأسس دوروتار. " * 40,
        "hindi": "थ्रॉल, ड्यूरोटन का बेटा, ओर्क्स को शिविरों से बाहर ले गया और ड्यूरोटार की स्थापना की। " * 40,
        "thai": "ทรอลล์ บุตรของดูโรทาน นำพวกออร์คออกจากค่ายกักกันและก่อตั้งดูโรทาร์ " * 40,
        "greek_hebrew": "Ο Θραλ, γιος του Ντούροταν. תראל, בנו של דורוטן. " * 40,
        "emoji": "🐉🔥⚔️🛡️👑🧙‍♂️🧝🏽‍♀️👨‍👩‍👧‍👦🏳️‍🌈🇩🇪🇯🇵😀😃😄🥲🫠" * 60,
        "symbols": "∑∫∂√∞≈≠≤≥∈∉⊂⊃∪∩→←↑↓↔⇒⇔■□▲△●○◆◇★☆♠♣♥♦♪♫☀☁☂☃" * 40,
        "box_drawing": "┌─┬─┐│ │ │├─┼─┤└─┴─┘╔═╦═╗║ ║ ║╚═╩═╝" * 60,
        "base64": base64.b64encode(blob).decode(),
        "hex": blob.hex(),
        "punctuation": "!@#$%^&*()_+-=[]{}|;':\",./<>?`~\\" * 80,
        "python": "def f(x):\n    return {k: [v ** 2 for v in x[k] if v % 3] for k in x}\n" * 40,
        "minified_js": "function a(b,c){return b&&c?b.map(function(d){return d*c}):[]};var e=a([1,2],3);" * 40,
        "json": json.dumps([{"id": i, "name": f"npc-{i}", "alive": i % 2 == 0, "x": i / 7} for i in range(120)]),
        "whitespace": " \t\n" * 500 + "a" + "\n" * 1000,
        "digits": "".join(str(rng.randrange(10)) for _ in range(3000)),
        "random_codepoints": "".join(chr(rng.choice([rng.randrange(0x20, 0xD7FF), rng.randrange(0xE000, 0x10FFFF)]))
                                     for _ in range(1500)),
        "special_token_text": "<|endoftext|><|im_start|>user<|im_sep|>" * 40,
        "mixed": "Thrall 萨尔 Тралл 🐉 ∑ <x/> 0xDEADBEEF\n" * 60,
    }


CORPUS = _corpus()
with warnings.catch_warnings():  # bpe-openai reads its data with a deprecated importlib call
    warnings.simplefilter("ignore", DeprecationWarning)
    import bpe_openai

    ENCODINGS = {name: bpe_openai.get_encoding(name) for name in ("o200k_base", "cl100k_base")}


def true_count(encoding: str, text: str) -> int:
    return len(ENCODINGS[encoding].encode(text, disallowed_special=()))


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("name", CORPUS)
def test_the_offline_count_is_an_upper_bound(name, encoding):
    text = CORPUS[name]
    counted, method = pricing.count_messages([{"role": "user", "content": text}], "chars")
    assert method == "chars"
    overhead = pricing.PER_MESSAGE_TOKENS + pricing.PER_REPLY_TOKENS
    assert counted - overhead >= true_count(encoding, text)


def test_every_token_covers_at_least_one_byte():
    # Why the bound holds by construction: no ordinary token of either vocabulary is empty,
    # so a text of n UTF-8 bytes encodes to at most n tokens.
    for enc in ENCODINGS.values():
        values = enc.token_byte_values()
        assert len(values) >= 100_000
        for token in (t for t, raw in enumerate(values) if not raw):
            # Only ids that are no ordinary token come back empty: gaps and special tokens.
            try:
                raw = enc.decode_single_token_bytes(token)
            except KeyError:
                continue
            assert raw.decode("utf-8", "replace") in enc.special_tokens_set, token


def test_a_lone_surrogate_is_counted_not_raised():
    counted, _ = pricing.count_messages([{"role": "user", "content": "a\ud83d b\ud800"}], "chars")
    assert counted >= pricing.PER_MESSAGE_TOKENS + pricing.PER_REPLY_TOKENS + 8


def test_english_over_reservation_is_what_the_docs_say():
    # The built-in research prompt for Thrall, counted both ways: docs/how-it-works.md
    # quotes the ratio (bytes are 4 to 5 times the o200k count of English).
    from mythline_cli import research
    from mythline_cli.fleet.schemas import RECORD_MODELS

    settings = parse_config({})
    agent = settings.agent(AGENT)
    schema = RECORD_MODELS[agent.kind]
    messages = research.messages(agent, "Thrall", [], settings.prompts_dir(), schema, "json_schema")
    bound, _ = pricing.count_messages(messages, "chars")
    overhead = pricing.PER_REPLY_TOKENS + len(messages) * pricing.PER_MESSAGE_TOKENS
    true = overhead + sum(true_count("o200k_base", m["content"]) for m in messages)
    assert 3.5 <= bound / true <= 5.5


class SilentProxy:
    """A TCP server that accepts connections and never answers: a proxy that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent_proxy(tmp_path: Path):
    proxy = SilentProxy()
    yield proxy
    proxy.close()


def proxied_env(proxy: SilentProxy, tiktoken_cache: Path) -> dict[str, str]:
    env = {"TIKTOKEN_CACHE_DIR": str(tiktoken_cache)}
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        env[var] = proxy.url
    return env


def auto_config(config) -> None:
    config(provider={"tokenizer": "auto", "model": "openai/gpt-4o-mini"})


@pytest.mark.parametrize("cache", ["empty", "corrupt"])
def test_dry_run_and_doctor_make_no_network_access(tmp_path, config, silent_proxy, cache):
    auto_config(config)
    tiktoken_cache = tmp_path / "tiktoken"
    tiktoken_cache.mkdir()
    planted = None
    if cache == "corrupt":
        # A damaged file where tiktoken keeps o200k_base: tiktoken itself would delete it and
        # download it again.
        url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
        planted = tiktoken_cache / hashlib.sha1(url.encode()).hexdigest()
        planted.write_bytes(b"not a vocabulary\n")
    env = proxied_env(silent_proxy, tiktoken_cache)
    dry = mythline("run", AGENT, "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["estimate"]["counted_by"] == "chars"
    doctor = mythline("doctor", env=env)
    assert "tokenizer: chars" in doctor.stdout, doctor.stdout
    assert silent_proxy.connections == 0
    if planted is not None:
        assert planted.read_bytes() == b"not a vocabulary\n"


def test_run_makes_no_network_access_but_its_provider_calls(tmp_path, config, llm_server, silent_proxy):
    auto_config(config)
    llm_server.responder = lore_responder(AGENT)
    (tmp_path / "tiktoken").mkdir()
    # The provider is local, so it bypasses the proxy; anything else would go through it.
    env = {**proxied_env(silent_proxy, tmp_path / "tiktoken"), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
           KEY_ENV: TEST_KEY}
    result = mythline("run", AGENT, env=env)
    assert result.returncode == 0, result.stderr
    assert llm_server.count() == 2
    assert silent_proxy.connections == 0


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory) -> Path:
    return write_tiktoken_cache(tmp_path_factory.mktemp("tiktoken-cache"))


def test_tiktoken_counts_from_its_cache_without_the_network(config, silent_proxy, tiktoken_cache):
    auto_config(config)
    env = proxied_env(silent_proxy, tiktoken_cache)
    dry = mythline("run", AGENT, "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["estimate"]["counted_by"] == "tiktoken"
    # A true count (the prompt plus its schema, times the margin) stays below the prompt's bytes alone.
    assert report["estimate"]["prompt_tokens"] < sum(len(m["content"].encode()) for m in report["messages"])
    assert "tokenizer: tiktoken" in mythline("doctor", env=env).stdout
    assert silent_proxy.connections == 0
