"""``mythline keys``: the key store scheduled runs read, and the lookup order env > file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from helpers import KEY_ENV, TEST_KEY, lore_responder, mythline


def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "xdg-config" / "mythline" / "keys.json"


def test_set_reads_stdin_and_writes_a_0600_file(tmp_path: Path) -> None:
    result = mythline("keys", "set", KEY_ENV, input=TEST_KEY + "\n")
    assert result.returncode == 0, result.stderr
    path = keys_file(tmp_path)
    assert result.stdout == f"stored {KEY_ENV} in {path}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_bytes())[KEY_ENV] == TEST_KEY
    path.unlink()  # the leak check greps every file under tmp_path


def test_path_list_rm(tmp_path: Path) -> None:
    assert mythline("keys", "path").stdout == f"{keys_file(tmp_path)}\n"
    assert "no keys stored" in mythline("keys", "list").stdout
    mythline("keys", "set", "B_KEY", input="value-b")
    mythline("keys", "set", "A_KEY", input="value-a")
    listed = mythline("keys", "list", env={"B_KEY": "shell"})
    assert listed.stdout == "A_KEY\nB_KEY  (the environment variable is set too, and wins)\n"
    assert "value" not in listed.stdout
    assert mythline("keys", "rm", "A_KEY").returncode == 0
    gone = mythline("keys", "rm", "A_KEY")
    assert gone.returncode == 2 and gone.stderr.startswith("mythline: no key A_KEY in ")
    assert mythline("keys", "list").stdout == "B_KEY\n"


def test_override_file_and_bad_input(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "k.json"
    env = {"MYTHLINE_KEYS_FILE": str(other)}
    assert mythline("keys", "set", "X_KEY", input="v1", env=env).returncode == 0
    assert json.loads(other.read_text())["X_KEY"] == "v1"
    bad_name = mythline("keys", "set", "not-a-name", input="v")
    assert bad_name.returncode == 2 and "is not a key name" in bad_name.stderr
    empty = mythline("keys", "set", "X_KEY", input="")
    assert empty.returncode == 2 and "no value given" in empty.stderr
    two = mythline("keys", "set", "X_KEY", input="a\nb\n")
    assert two.returncode == 2 and "one line" in two.stderr
    # The value never goes on the command line, where `ps` would show it.
    extra = mythline("keys", "set", "X_KEY", "value-on-argv")
    assert extra.returncode == 2


def test_a_broken_file_is_one_line_without_its_content(tmp_path: Path) -> None:
    path = keys_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"X_KEY": "sk-half-writ', encoding="utf-8")
    result = mythline("keys", "list")
    assert result.returncode == 2
    assert result.stderr == (f"mythline: {path}: the key store is not valid JSON (line 1); fix it or remove it and "
                             "store the keys again with: mythline keys set NAME\n")


def test_a_run_finds_the_key_in_the_store_and_env_wins(tmp_path, home, config, llm_server, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    mythline("keys", "set", KEY_ENV, input=TEST_KEY)
    llm_server.responder = lore_responder("world-npcs")
    result = mythline("run", "world-npcs")
    assert result.returncode == 0, result.stderr
    auth = {r["headers"].get("Authorization") or r["headers"].get("authorization") for r in llm_server.requests}
    assert auth == {f"Bearer {TEST_KEY}"}
    mythline("run", "world-npcs", "--force", env={KEY_ENV: "sk-from-the-shell-wins"})
    last = llm_server.requests[-1]["headers"]
    assert (last.get("Authorization") or last.get("authorization")) == "Bearer sk-from-the-shell-wins"
    keys_file(tmp_path).unlink()


def test_doctor_names_the_store(tmp_path, home, config, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    mythline("keys", "set", KEY_ENV, input=TEST_KEY)
    result = mythline("doctor")
    assert f"ok   api key: {KEY_ENV} is set in the key store ({keys_file(tmp_path)})" in result.stdout.splitlines()
    keys_file(tmp_path).unlink()


def test_the_watchdog_posts_to_a_webhook_url_from_the_store(tmp_path: Path, home: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from webhook_server import WebhookServer

    token = "T0KEN-only-in-the-key-store-42"
    with WebhookServer() as hook:
        Path("mythline.toml").write_text('[alerts]\nwebhook_url_env = "MYTHLINE_TEST_WEBHOOK"\nretries = 0\n',
                                         encoding="utf-8")
        assert mythline("keys", "set", "MYTHLINE_TEST_WEBHOOK", input=hook.url(f"/services/{token}")).returncode == 0
        long_ago = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
        beat = {"agent": "world-npcs", "run_id": "r", "pid": 999_999_999, "state": "ok", "started": long_ago,
                "updated": long_ago, "finished": long_ago, "consecutive_failures": 0}
        (home / "agents" / "world-npcs").mkdir(parents=True)
        (home / "agents" / "world-npcs" / "heartbeat.json").write_text(json.dumps(beat), encoding="utf-8")
        result = mythline("watchdog")
        assert result.returncode == 1
        [post] = hook.posts
        assert post["body"]["kind"] == "down" and post["body"]["agent"] == "world-npcs"
        assert token in post["path"]
    for path in home.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert token not in result.stdout + result.stderr
