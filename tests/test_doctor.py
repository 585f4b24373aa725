"""``mythline doctor``: each check's pass and fail lines, the exit code, and a key that never shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from probe import run_app
from typer.testing import CliRunner

from mythline_cli import schedule
from mythline_cli.cli import app, doctor
from mythline_cli.config import load_settings

from helpers import KEY_ENV, TEST_KEY

runner = CliRunner()


GOOD = f"""[provider]
model = "test/model"
api_key_env = "{KEY_ENV}"
[provider.prices."test/model"]
input_per_million = 1.0
output_per_million = 2.0
"""


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_crontab: Path) -> Path:
    """No network for tiktoken's files, and a fake crontab instead of the user's."""
    (tmp_path / "tiktoken-empty").mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-empty"))
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    return fake_crontab


def config(text: str = GOOD) -> Path:
    path = Path("mythline.toml").absolute()
    path.write_text(text, encoding="utf-8")
    return path


def doctor_run(*args: str):
    return runner.invoke(app, ["doctor", *args])


def lines_of(result) -> dict[str, str]:
    found = {}
    for line in result.stdout.splitlines():
        word, rest = line.split(None, 1)
        name, message = rest.split(": ", 1)
        found[name] = f"{word} {message}"
    return found


def test_all_good_exits_0(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    path = config()
    assert runner.invoke(app, ["schedule", "cron", "--install"]).exit_code == 0
    result = doctor_run()
    assert result.exit_code == 0, result.stdout
    lines = lines_of(result)
    assert list(lines) == ["config", "api key", "state home", "timezone", "scheduler", "tokenizer", "prices", "audit"]
    assert lines["config"].startswith(f"ok valid · {path} (./mythline.toml in the working directory; a run "
                                      "started elsewhere, as cron starts it, would not find it")
    assert lines["api key"] == (f"ok {KEY_ENV} is set in the environment (scheduled runs do not see it: store it "
                                f"with `mythline keys set {KEY_ENV}`, check with `mythline doctor --scheduled`)")
    assert lines["state home"] == f"ok {home} is writable"
    assert lines["timezone"].startswith("ok local (") and "today's budget window is day:" in lines["timezone"]
    assert lines["scheduler"] == "ok crontab: 11 entries match the config"
    assert lines["tokenizer"].startswith("info chars (offline fallback")
    assert lines["prices"] == "ok test/model: $1 in / $2 out per million tokens (config)"
    assert TEST_KEY not in result.stdout + result.stderr
    assert not list(home.iterdir()) or all(not p.name.startswith(".doctor-") for p in home.iterdir())


def test_missing_key_fails_with_exit_1() -> None:
    config()
    result = doctor_run()
    assert result.exit_code == 1
    assert (f"FAIL api key: {KEY_ENV} is not set; export {KEY_ENV}=... in your shell, or store it for scheduled "
            f"runs with: mythline keys set {KEY_ENV} (or set provider.api_key_env = \"\" for a local server that "
            "needs no key)") in result.stdout.splitlines()


def test_the_key_never_appears(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    config(GOOD + '[budget]\ntimezone = "Europe/Berlin"\n')
    for args in ([], ["--json"]):
        result = doctor_run(*args)
        assert TEST_KEY not in result.stdout + result.stderr
        assert TEST_KEY[:12] not in result.stdout + result.stderr


def test_no_key_needed() -> None:
    config(GOOD.replace(f'api_key_env = "{KEY_ENV}"', 'api_key_env = ""'))
    result = doctor_run()
    assert lines_of(result)["api key"] == "ok none needed (provider.api_key_env is empty)"


def test_invalid_config_fails_and_skips_what_needs_it(home: Path) -> None:
    path = config('[budget]\ntimezone = "Mars/Olympus"\n')
    result = doctor_run()
    assert result.exit_code == 1
    lines = lines_of(result)
    assert lines["config"].startswith(f"FAIL {path}: budget.timezone: unknown timezone 'Mars/Olympus'")
    assert list(lines) == ["config", "state home"]
    assert "Traceback" not in result.stdout + result.stderr


def test_state_home_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("MYTHLINE_HOME", str(blocker / "home"))
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    config()
    result = doctor_run()
    assert result.exit_code == 1
    # A file in the way is not a permission problem: the line says what it is.
    assert lines_of(result)["state home"].startswith(f"FAIL {blocker / 'home'} is not a directory, so it cannot be "
                                                     "the state home")


def test_named_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    config(GOOD + '[budget]\ntimezone = "Europe/Berlin"\n')
    line = lines_of(doctor_run())["timezone"]
    assert line.startswith("ok Europe/Berlin; today's budget window is day:")


def test_nothing_scheduled_is_a_warning_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    config()
    result = doctor_run()
    assert result.exit_code == 0
    assert lines_of(result)["scheduler"] == ("warn no mythline entries in your crontab; the fleet runs only by hand. "
                                             "Schedule it with: mythline schedule cron --install")


def test_no_crontab_program_is_a_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    monkeypatch.setenv("MYTHLINE_CRONTAB", str(tmp_path / "no-such-crontab"))
    config()
    result = doctor_run()
    assert result.exit_code == 0
    assert lines_of(result)["scheduler"].startswith("warn no ")


def test_missing_extra_and_stale_entries_fail(monkeypatch: pytest.MonkeyPatch, offline: Path) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    config()
    assert runner.invoke(app, ["schedule", "cron", "--install"]).exit_code == 0
    assert runner.invoke(app, ["schedule", "cron", "--uninstall", "--agent", "world-npcs"]).exit_code == 0
    table = offline.read_text(encoding="utf-8")
    offline.write_text(table.replace("run world-lore >>", "run world-lore --force >>"), encoding="utf-8")
    config(GOOD + "[agents.world-items]\nenabled = false\n")
    result = doctor_run()
    assert result.exit_code == 1
    assert lines_of(result)["scheduler"] == (
        "FAIL crontab differs from the config: missing world-npcs; extra world-items; stale world-lore; "
        "update it with: mythline schedule cron --install")
    assert runner.invoke(app, ["schedule", "cron", "--install"]).exit_code == 0
    assert doctor_run().exit_code == 0


def test_another_executable_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    config()
    assert runner.invoke(app, ["schedule", "cron", "--install", "--exe", "/old/venv/bin/mythline"]).exit_code == 0
    line = lines_of(doctor_run())["scheduler"]
    assert line.startswith("FAIL crontab differs from the config: stale world-zones, world-npcs,")


def test_the_fleet_line_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    config()
    assert runner.invoke(app, ["schedule", "cron", "--install", "--fleet"]).exit_code == 0
    assert lines_of(doctor_run())["scheduler"] == "ok crontab: the fleet line (run --due) match the config"


def test_windows_tasks_are_compared_field_by_field() -> None:
    config()
    cfg = load_settings()
    plans, _ = schedule.plan_windows(cfg, windows=True)
    registered = {schedule.task_name(p.name): schedule.task_xml(p) for p in plans}

    def query(name: str) -> str | None:
        return registered.get(name)

    assert doctor.check_scheduler(cfg, windows=True, query=query)[0].status == "ok"
    # Windows' export adds a UserId, a Date and defaults: not a difference.
    npcs = schedule.task_name("world-npcs")
    registered[npcs] = registered[npcs].replace("<LogonType>", "<UserId>PC\\you</UserId><LogonType>")
    assert doctor.check_scheduler(cfg, windows=True, query=query)[0].status == "ok"
    registered[npcs] = registered[npcs].replace("<Interval>PT30M</Interval>", "<Interval>PT1H</Interval>")
    del registered[schedule.task_name("world-lore")]
    check = doctor.check_scheduler(cfg, windows=True, query=query)[0]
    assert (check.status, check.message) == ("fail", "Task Scheduler differs from the config: missing world-lore; "
                                             "stale world-npcs; update it with: mythline schedule windows --out "
                                             "DIR, then DIR\\install.cmd")
    none = doctor.check_scheduler(cfg, windows=True, query=lambda name: None)[0]
    assert none.status == "warn" and "no mythline entries in your Task Scheduler" in none.message


def test_unknown_price_with_usd_caps_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    config(f'[provider]\nmodel = "acme/secret-model"\napi_key_env = "{KEY_ENV}"\n')
    result = doctor_run()
    assert result.exit_code == 1
    assert lines_of(result)["prices"] == (
        "FAIL no price known for model 'acme/secret-model', so its USD caps cannot be enforced and every run would "
        'stop; add [provider.prices."acme/secret-model"] with input_per_million and output_per_million to '
        "mythline.toml (0 for a free local model)")


def test_no_usd_caps_need_no_price(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    config(f'[provider]\nmodel = "acme/secret-model"\napi_key_env = "{KEY_ENV}"\n'
           '[budget]\ndaily_usd = "none"\n[defaults]\ndaily_usd = "none"\n')
    lines = lines_of(doctor_run())
    assert lines["prices"] == "info no USD cap is set, so no price is needed"


def test_tokenizer_set_to_chars() -> None:
    config(GOOD.replace("[provider]\n", '[provider]\ntokenizer = "chars"\n'))
    assert lines_of(doctor_run())["tokenizer"] == 'info chars (provider.tokenizer = "chars")'


def test_json(monkeypatch: pytest.MonkeyPatch) -> None:
    config()
    result = doctor_run("--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert [c["name"] for c in data["checks"]] == ["config", "api key", "state home", "timezone", "scheduler",
                                                   "tokenizer", "prices", "audit"]
    assert {c["status"] for c in data["checks"]} <= {"ok", "fail", "warn", "info"}
    assert next(c for c in data["checks"] if c["name"] == "api key")["status"] == "fail"


def test_terminal_symbols(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "is_tty", lambda: True)
    config()
    result = doctor_run()
    text = result.stdout
    assert "✓ config: valid" in text and "✗ api key:" in text and "! scheduler:" in text and "· tokenizer:" in text
    assert "FAIL" not in text


@pytest.mark.parametrize("args", [["doctor"], ["doctor", "--json"]], ids=" ".join)
def test_doctor_does_not_import_the_llm_stack(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    config()
    report = run_app(args)
    assert report.returncode == 0, report.stdout
    assert report.llm_stack == set()
    assert TEST_KEY not in report.stdout


def test_doctor_as_a_real_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import mythline

    config()
    proc = mythline("doctor")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[1].startswith("FAIL api key:")
    assert proc.stderr == ""


# -- doctor --scheduled: what cron will see ---------------------------------------------------

STORED = "sk-stored-for-cron-0123456789"


def store_key(value: str = STORED) -> None:
    from mythline_cli import keys

    keys.store(KEY_ENV, value)


def scheduled(result) -> dict[str, str]:
    return {k: v for k, v in lines_of(result).items() if k.startswith("scheduled")}


def install(*args: str) -> None:
    result = runner.invoke(app, ["schedule", "cron", "--install", "--agent", "world-npcs", *args])
    assert result.exit_code == 0, result.output


def test_scheduled_runs_the_installed_line_as_cron_would(home: Path, tmp_path: Path) -> None:
    path = config()
    store_key()
    install()
    result = doctor_run("--scheduled")
    exe = Path(sys.executable).with_name("mythline")
    seen = (f"key {KEY_ENV} found (key store) · config {path} · home {home} · exe {exe}")
    assert scheduled(result) == {"scheduled world-npcs": f"ok {seen}",
                                 "scheduled watchdog": f"ok {seen}"}
    assert STORED not in result.stdout + result.stderr


def test_a_key_only_in_the_shell_is_not_found_under_cron(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, STORED)
    path = config()
    install()
    result = doctor_run("--scheduled")
    assert result.exit_code == 1
    line = scheduled(result)["scheduled world-npcs"]
    assert line.startswith(f"FAIL key {KEY_ENV} NOT found · config {path} · home {home} · exe ")
    assert line.endswith(f"; {KEY_ENV} is not set; export {KEY_ENV}=... in your shell, or store it for scheduled "
                         f"runs with: mythline keys set {KEY_ENV} (or set provider.api_key_env = \"\" for a local "
                         "server that needs no key)")
    assert STORED not in result.stdout


@pytest.fixture
def shell_home_not_passwd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$HOME is not this user's passwd home (cron's), and no XDG_CONFIG_HOME: the key store
    under $HOME is not where a cron job would look by itself."""
    import pwd

    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("MYTHLINE_KEYS_FILE", raising=False)
    passwd_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert Path.home() != passwd_home  # the suite gives every test its own HOME
    assert not (passwd_home / ".config" / "mythline" / "keys.json").exists()
    return passwd_home


def test_a_home_other_than_the_passwd_one_still_finds_the_stored_key(home: Path, shell_home_not_passwd_home: Path,
                                                                     offline: Path) -> None:
    path = config()
    store_key()
    store = Path.home() / ".config" / "mythline" / "keys.json"
    assert store.is_file()
    install()
    assert f"MYTHLINE_KEYS_FILE='{store}'" in offline.read_text(encoding="utf-8")
    result = doctor_run("--scheduled")
    line = scheduled(result)["scheduled world-npcs"]
    assert line.startswith(f"ok key {KEY_ENV} found (key store) · config {path} · home {home} · exe "), line
    assert STORED not in result.stdout + result.stderr


def test_a_line_that_reads_another_key_store_says_so_not_store_it_again(home: Path, shell_home_not_passwd_home: Path,
                                                                        offline: Path) -> None:
    config()
    store_key()
    install()
    # As a line written without the store's path reads: the store under cron's HOME.
    table = offline.read_text(encoding="utf-8")
    offline.write_text(re.sub(r"MYTHLINE_KEYS_FILE='[^']*' ", "", table), encoding="utf-8")
    result = doctor_run("--scheduled")
    assert result.exit_code == 1
    line = scheduled(result)["scheduled world-npcs"]
    cron_store = shell_home_not_passwd_home / ".config" / "mythline" / "keys.json"
    assert line.startswith(f"FAIL key {KEY_ENV} NOT found"), line
    assert line.endswith(f"; {KEY_ENV} is in this shell's key store {Path.home() / '.config/mythline/keys.json'}, "
                         f"but the line reads {cron_store} (cron starts jobs with HOME={shell_home_not_passwd_home}, "
                         f"this shell has HOME={Path.home()}); reinstall from this shell with: mythline schedule "
                         "cron --install (the lines then name the store)"), line
    assert STORED not in result.stdout + result.stderr


def test_lines_installed_with_no_config_read_the_one_this_shell_reads_later(home: Path,
                                                                          shell_home_not_passwd_home: Path) -> None:
    assert not Path("mythline.toml").exists()
    install()
    # The user then writes the config where this shell finds it from any directory.
    later = Path.home() / ".config" / "mythline" / "mythline.toml"
    later.parent.mkdir(parents=True)
    later.write_text(GOOD, encoding="utf-8")
    store_key()
    line = scheduled(doctor_run("--scheduled"))["scheduled world-npcs"]
    assert line.startswith(f"ok key {KEY_ENV} found (key store) · config {later} · home {home} · exe "), line


def test_a_key_in_the_crontab_is_found_and_warned_about(home: Path, offline: Path) -> None:
    config()
    install()
    offline.write_text(f"{KEY_ENV}={STORED}\n" + offline.read_text(encoding="utf-8"), encoding="utf-8")
    result = doctor_run("--scheduled")
    line = scheduled(result)["scheduled world-npcs"]
    assert line.startswith(f"warn key {KEY_ENV} found (environment)")
    assert "X-Cron-Env headers" in line and f"`mythline keys set {KEY_ENV}`" in line
    assert STORED not in result.stdout


def test_the_watchdog_line_is_checked(home: Path, offline: Path) -> None:
    config()
    store_key()
    install()
    table = offline.read_text(encoding="utf-8")
    dog = next(ln for ln in table.splitlines() if ln.endswith(" watchdog"))
    offline.write_text(table.replace(dog + "\n", ""), encoding="utf-8")
    result = doctor_run("--scheduled")
    assert result.exit_code == 1
    assert scheduled(result)["scheduled watchdog"] == ("FAIL no watchdog line, so nothing notices an agent that "
                                                       "stops running; add it with: mythline schedule cron --install")
    # The documented line without MYTHLINE_HOME/MYTHLINE_CONFIG watches the default home and no config.
    bare = "*/5 * * * * " + dog[dog.index(" '") + 1:]
    offline.write_text(table.replace(dog, bare), encoding="utf-8")
    result = doctor_run("--scheduled")
    assert result.exit_code == 1
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("FAIL scheduled watchdog:")]
    assert any("it reads config none (built-in defaults)" in ln for ln in lines)
    assert "FAIL scheduled watchdog: the watchdog line watches another state home or config than the agents' " \
           "lines; reinstall with: mythline schedule cron --install" in lines


def test_a_line_that_cannot_start_says_why(home: Path, offline: Path) -> None:
    config()
    install()
    table = offline.read_text(encoding="utf-8")
    exe = str(Path(sys.executable).with_name("mythline"))
    offline.write_text(table.replace(f"'{exe}' run", "'/gone/mythline' run"), encoding="utf-8")
    line = scheduled(doctor_run("--scheduled"))["scheduled world-npcs"]
    assert line.startswith("FAIL it does not start under cron: ") and "/gone/mythline" in line


def test_a_key_inside_the_block_is_never_printed(home: Path, offline: Path) -> None:
    config()
    install()
    table = offline.read_text(encoding="utf-8")
    offline.write_text(table.replace("# END mythline", f"{KEY_ENV}={STORED}\n# END mythline"), encoding="utf-8")
    result = doctor_run()
    assert f"extra variable {KEY_ENV}" in lines_of(result)["scheduler"]
    assert STORED[:8] not in result.stdout and STORED[-11:] not in result.stdout


def test_head_closing_the_pipe_is_quiet(tmp_path: Path) -> None:
    config(GOOD.replace(KEY_ENV, ""))
    proc = subprocess.Popen([sys.executable, "-m", "mythline_cli", "doctor"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written, as with `| head -1` at worst
    _, err = proc.communicate(timeout=60)
    assert err.decode() == ""
    assert proc.returncode in (0, 1)


def test_windows_shows_each_tasks_action_and_working_directory(home: Path) -> None:
    path = config()
    cfg = load_settings()
    plans, _ = schedule.plan_windows(cfg, exe=r"C:\v\Scripts\mythlinew.exe", windows=True)
    registered = {schedule.task_name(p.name): schedule.task_xml(p) for p in plans}
    checks = doctor.check_scheduled(cfg, windows=True, query=registered.get)
    by_name = {c.name: c for c in checks}
    npcs = by_name["scheduled world-npcs"]
    exe = r"C:\v\Scripts\mythlinew.exe"
    assert (npcs.status, npcs.message) == ("ok", rf"runs {exe} --home {home} --config {path} run world-npcs "
                                           r"· working directory none (Task Scheduler starts it in C:\Windows\System32)")
    assert by_name["scheduled watchdog"].message.startswith(rf"runs {exe} --home {home} --config {path} watchdog")
    # A task written before it carried the state home reads the default one: named, and how to fix it.
    old = schedule.task_name("world-npcs")
    registered[old] = registered[old].replace(f"--home {home} ", "")
    npcs = {c.name: c for c in doctor.check_scheduled(cfg, windows=True, query=registered.get)}["scheduled world-npcs"]
    assert npcs.status == "fail" and npcs.message.endswith(
        f"; it names no --home, so it will not use the state home {home} (MYTHLINE_HOME here): regenerate with "
        "mythline schedule windows --out DIR")
    registered = {schedule.task_name(p.name): schedule.task_xml(p) for p in plans}
    del registered[schedule.task_name("watchdog")]
    dog = {c.name: c for c in doctor.check_scheduled(cfg, windows=True, query=registered.get)}["scheduled watchdog"]
    assert dog.status == "fail" and "no Mythline\\watchdog task" in dog.message


def test_doctor_says_a_state_home_that_is_a_file_is_one(home: Path) -> None:
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a directory")
    result = doctor_run()
    assert result.exit_code == 1
    assert lines_of(result)["state home"] == (f"FAIL {home} is not a directory, so it cannot be the state home; "
                                              "point MYTHLINE_HOME at a directory, or move the file away")
