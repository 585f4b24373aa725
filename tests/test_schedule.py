"""``mythline schedule cron|windows`` and the windowless launcher.

Real tools where they exist: ``crontab -n`` checks every generated block, a fake crontab
program (a shell script storing to a file) stands in for the user's crontab, one guarded
round trip uses the real one, and xmllint checks the task XML against the schema.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from probe import run_app
from typer.testing import CliRunner

from mythline_cli import schedule
from mythline_cli.cli import app
from mythline_cli.config import parse_config
from mythline_cli.fleet.topics import TOPICS

ROOT = Path(__file__).resolve().parent.parent
XSD = Path(os.environ.get("MYTHLINE_TASK_XSD", ROOT.parent / "shared" / "ref" / "windows-task.xsd"))
NS = {"t": schedule.TASK_NS}
AGENTS = list(TOPICS)
EXE = "/opt/venv/bin/mythline"
runner = CliRunner()


FOREIGN = 'MAILTO=""\n# backups\n15 3 * * * /usr/local/bin/backup --quiet\n@reboot /usr/bin/true\n'


@pytest.fixture(autouse=True)
def plain_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A home without XDG_CONFIG_HOME, as most users have: cron finds the key store by itself.

    Most users' $HOME is also their passwd entry's, the HOME cron gives jobs; this test user's
    passwd home is root's, so that one lookup answers this HOME (tests/test_doctor.py has the
    case of a $HOME that differs, with the real lookup)."""
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setattr(schedule.common, "cron_home", lambda: Path(os.environ["HOME"]))


def invoke(*args: str):
    return runner.invoke(app, list(args))


def write_toml(text: str) -> Path:
    path = Path("mythline.toml").absolute()
    path.write_text(text, encoding="utf-8")
    return path


def job_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#") and not ln.startswith("MAILTO=")]


def agent_lines(text: str) -> list[str]:
    return [ln for ln in job_lines(text) if schedule.job_key(ln) != schedule.WATCHDOG]


def crontab_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "check.cron"
    path.write_text(text, encoding="utf-8")
    return subprocess.run(["crontab", "-n", str(path)], capture_output=True, text=True, timeout=30)


needs_crontab = pytest.mark.skipif(shutil.which("crontab") is None, reason="no crontab program (apt-get install cron)")


# -- cron: shape ------------------------------------------------------------------------------

def test_one_agent_block_exact(home: Path) -> None:
    result = invoke("schedule", "cron", "--agent", "world-npcs", "--exe", EXE, "--home", "/srv/mythline")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "# BEGIN mythline\n"
        "# Regenerate: mythline schedule cron --agent world-npcs --exe /opt/venv/bin/mythline --home /srv/mythline\n"
        "# MAILTO: not set (schedule.mailto); each job appends its output to its log, so cron mails only when a "
        "job cannot start\n"
        "# world-npcs: every 30m\n"
        "3-59/30 * * * * MYTHLINE_HOME='/srv/mythline' '/opt/venv/bin/mythline' run world-npcs "
        ">> '/srv/mythline/logs/world-npcs.log' 2>&1\n"
        "# the watchdog: every 5 minutes, alert on agents that stopped running (prints only the alerts it sends, "
        "so cron mails those)\n"
        "*/5 * * * * MYTHLINE_HOME='/srv/mythline' '/opt/venv/bin/mythline' watchdog\n"
        "# END mythline\n"
    )


def test_every_enabled_agent_gets_one_line_with_this_home_and_its_log(home: Path) -> None:
    write_toml('[agents.world-items]\nenabled = false\n[agents.world-lore]\ninterval = "2h"\n')
    result = invoke("schedule", "cron", "--exe", EXE)
    assert result.exit_code == 0, result.output
    lines = job_lines(result.stdout)
    expected = [a for a in AGENTS if a != "world-items"]
    assert [schedule.job_key(ln) for ln in lines] == expected + [schedule.WATCHDOG]
    config = Path("mythline.toml").absolute()
    for agent, line in zip(expected, lines[:-1], strict=True):
        assert f"MYTHLINE_HOME='{home}' MYTHLINE_CONFIG='{config}' '{EXE}' run {agent} " in line
        assert line.endswith(f">> '{home}/logs/{agent}.log' 2>&1")
    # The watchdog watches this fleet: the same state home and config, its output mailed.
    assert lines[-1] == f"*/5 * * * * MYTHLINE_HOME='{home}' MYTHLINE_CONFIG='{config}' '{EXE}' watchdog"
    lore = next(ln for ln in lines if " run world-lore " in ln)
    assert lore.startswith("36 0-23/2 * * * ")


def test_no_config_file_means_no_mythline_config(home: Path) -> None:
    result = invoke("schedule", "cron")
    assert result.exit_code == 0
    assert "MYTHLINE_CONFIG" not in result.stdout
    assert len(agent_lines(result.stdout)) == len(AGENTS)


def test_the_fleet_starts_at_distinct_minutes(home: Path) -> None:
    for interval, _fields in (("30m", 1), ("1h", 1), ("2h", 2), ("1d", 2), ("7d", 5)):
        write_toml(f'[defaults]\ninterval = "{interval}"\n')
        result = invoke("schedule", "cron", "--exe", EXE)
        starts = [" ".join(ln.split()[:5]) for ln in agent_lines(result.stdout)]
        assert len(set(starts)) == len(AGENTS), (interval, starts)


@pytest.mark.parametrize("interval,slot,spec,note", [
    (60, 4, "* * * * *", False),
    (90, 0, "* * * * *", True),
    (300, 9, "4-59/5 * * * *", False),
    (420, 3, "1-59/6 * * * *", True),
    (1800, 1, "3-59/30 * * * *", False),
    (2700, 1, "3-59/30 * * * *", True),
    (3600, 5, "30 * * * *", False),
    (5400, 5, "30 * * * *", True),
    (7200, 9, "48 1-23/2 * * *", False),
    (18000, 2, "48 0-23/4 * * *", True),
    (86400, 5, "0 12 * * *", False),
    (3 * 86400, 0, "0 0 * * *", True),
    (7 * 86400, 5, "0 12 * * 3", False),
    (20 * 86400, 0, "0 0 * * 0", True),
    (31 * 86400, 5, "0 12 15 * *", True),
])
def test_cron_timing_is_the_nearest_schedule_not_longer(interval: float, slot: int, spec: str, note: bool) -> None:
    timing = schedule.cron_timing(interval, slot, 10)
    assert timing.spec == spec
    assert (timing.note is not None) is note
    assert timing.every <= interval


def test_an_inexpressible_interval_says_so_in_its_comment(home: Path) -> None:
    write_toml('[agents.world-npcs]\ninterval = "45m"\n')
    result = invoke("schedule", "cron", "--agent", "world-npcs", "--exe", EXE)
    assert ("# world-npcs: every 45m (cron cannot run every 45m; every 30 minutes instead (the nearest schedule "
            "that is not longer))\n") in result.stdout


def test_percent_is_escaped_and_paths_are_quoted(home: Path) -> None:
    result = invoke("schedule", "cron", "--agent", "world-npcs", "--exe", "/opt/it's 100%/mythline",
                    "--home", "/srv/my home/50%")
    line = job_lines(result.stdout)[0]
    assert re.search(r"(?<!\\)%", line) is None, line
    assert "MYTHLINE_HOME='/srv/my home/50\\%'" in line
    assert "'/opt/it'\"'\"'s 100\\%/mythline' run world-npcs" in line


def test_a_line_runs_under_sh_as_cron_would_run_it(tmp_path: Path, home: Path) -> None:
    """Quote, escape and redirect for real: cron's % rule, then /bin/sh, then a fake mythline."""
    weird = tmp_path / "bin dir 100%" / "it's"
    weird.mkdir(parents=True)
    exe = weird / "mythline"
    exe.write_text('#!/bin/sh\necho "home=$MYTHLINE_HOME args=$*"\necho oops >&2\n', encoding="utf-8")
    exe.chmod(0o755)
    state = tmp_path / "state 5%"
    result = invoke("schedule", "cron", "--agent", "world-npcs", "--exe", str(exe), "--home", str(state))
    line = job_lines(result.stdout)[0]
    command = line.split(" ", 5)[5]
    # cron: an unescaped % ends the command; \% becomes %.
    assert re.search(r"(?<!\\)%", command) is None
    command = command.replace("\\%", "%")
    (state / "logs").mkdir(parents=True)
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    log = (state / "logs" / "world-npcs.log").read_text(encoding="utf-8")
    assert log == f"home={state} args=run world-npcs\noops\n"


def test_mailto_from_the_config(home: Path) -> None:
    write_toml('[schedule]\nmailto = "ops@example.com"\n')
    result = invoke("schedule", "cron", "--exe", EXE)
    lines = result.stdout.splitlines()
    assert lines[3] == "MAILTO=ops@example.com"
    assert lines[2].startswith("# MAILTO from schedule.mailto: cron mails ops@example.com only what")


def test_fleet_line(home: Path) -> None:
    result = invoke("schedule", "cron", "--fleet", "--exe", EXE)
    assert result.exit_code == 0
    assert job_lines(result.stdout) == [
        f"* * * * * MYTHLINE_HOME='{home}' '{EXE}' run --due >> '{home}/logs/fleet.log' 2>&1",
        f"*/5 * * * * MYTHLINE_HOME='{home}' '{EXE}' watchdog"]


@pytest.mark.parametrize("args,message", [
    (["--fleet", "--agent", "world-npcs"], "--fleet is one line for every agent; leave out --agent"),
    (["--install", "--uninstall"], "choose one of --install and --uninstall"),
    (["--agent", "nobody"], "unknown agent 'nobody'"),
    (["--out", "x.cron", "--install"], "--out writes a file; it cannot be combined with --install or --uninstall"),
])
def test_usage_errors(args: list[str], message: str, fake_crontab: Path) -> None:
    result = invoke("schedule", "cron", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("mythline: ") and message in result.stderr
    assert not fake_crontab.exists()


def test_a_disabled_agent_cannot_be_scheduled_alone(home: Path) -> None:
    write_toml("[agents.world-npcs]\nenabled = false\n")
    result = invoke("schedule", "cron", "--agent", "world-npcs")
    assert result.exit_code == 2
    assert "world-npcs is disabled (agents.world-npcs.enabled = false); enable it first" in result.stderr


def test_out_writes_the_same_text(home: Path) -> None:
    printed = invoke("schedule", "cron", "--exe", EXE).stdout
    result = invoke("schedule", "cron", "--exe", EXE, "--out", "lines.cron")
    assert result.exit_code == 0
    written = Path("lines.cron").read_text(encoding="utf-8")
    assert written.replace("--out lines.cron", "").replace(" \n", "\n") == printed.replace(" \n", "\n")


def test_executable_lookup(tmp_path: Path) -> None:
    on_path = lambda name: "/usr/local/bin/mythline"  # noqa: E731 - another install, first on PATH
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "mythline").write_text("", encoding="utf-8")
    python = str(bindir / "python")
    # The script that is running wins over PATH, and so does `python -m mythline_cli`.
    assert schedule.mythline_command(which=on_path, argv0=str(bindir / "mythline")) == [str(bindir / "mythline")]
    module = str(ROOT / "mythline_cli" / "__main__.py")
    assert schedule.mythline_command(which=on_path, executable=python, argv0=module) == [python, "-m", "mythline_cli"]
    # Imported (no mythline running): the script beside this Python, then PATH, then the module.
    assert schedule.mythline_command(which=on_path, executable=python, argv0="pytest") == [str(bindir / "mythline")]
    (bindir / "mythline").unlink()
    assert schedule.mythline_command(which=on_path, executable=python, argv0="pytest") == ["/usr/local/bin/mythline"]
    assert schedule.mythline_command(which=lambda name: None, executable=python, argv0="pytest") == \
        [python, "-m", "mythline_cli"]


def test_the_module_fallback_line_keeps_its_arguments_unquoted(home: Path) -> None:
    plan = schedule.plan_cron(parse_config({}), agent="world-npcs", which=lambda name: None)
    if plan.command[1:] == ["-m", "mythline_cli"]:
        line = job_lines(schedule.render_block(plan))[0]
        assert f"'{plan.command[0]}' -m mythline_cli run world-npcs >> " in line
    else:  # this venv has the mythline script beside python
        assert Path(plan.command[0]).name == "mythline"


@needs_crontab
@pytest.mark.parametrize("toml,args", [
    ("", []),
    ("", ["--fleet"]),
    ('[schedule]\nmailto = "ops@example.com"\n', []),
    ('[defaults]\ninterval = "7m"\n[agents.world-npcs]\ninterval = "2h"\n[agents.world-lore]\ninterval = "5h"\n'
     '[agents.world-items]\ninterval = "1d"\n[agents.quest-chains]\ninterval = "7d"\n'
     '[agents.world-zones]\ninterval = "31d"\n[agents.lore-crosscheck]\ninterval = "1m"\n', []),
    ("", ["--exe", "/opt/it's 100%/mythline", "--home", "/srv/my home/50%"]),
], ids=["default", "fleet", "mailto", "intervals", "weird-paths"])
def test_crontab_n_accepts_the_lines(toml: str, args: list[str], tmp_path: Path) -> None:
    if toml:
        write_toml(toml)
    result = invoke("schedule", "cron", *args)
    assert result.exit_code == 0, result.output
    check = crontab_check(result.stdout, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


@needs_crontab
def test_crontab_n_catches_a_broken_line(tmp_path: Path) -> None:
    # The check above can fail: an unescaped-field mistake is rejected.
    check = crontab_check("61 * * * * /bin/true\n", tmp_path)
    assert check.returncode != 0


# -- cron: install / uninstall ----------------------------------------------------------------

def test_install_is_idempotent_and_keeps_foreign_lines(fake_crontab: Path, home: Path) -> None:
    fake_crontab.write_text(FOREIGN, encoding="utf-8")
    first = invoke("schedule", "cron", "--install")
    assert first.exit_code == 0, first.output
    assert "installed 11 line(s) in your crontab" in first.stdout
    table = fake_crontab.read_text(encoding="utf-8")
    assert table.startswith(FOREIGN)
    block = table[len(FOREIGN):]
    assert block.startswith(schedule.BEGIN + "\n") and block.endswith(schedule.END + "\n")
    assert len(agent_lines(block)) == len(AGENTS)
    assert sum(schedule.job_key(ln) == schedule.WATCHDOG for ln in job_lines(block)) == 1
    assert (home / "logs").is_dir()  # so the redirect cannot fail

    second = invoke("schedule", "cron", "--install")
    assert second.exit_code == 0
    assert "already has the mythline block as configured; nothing changed" in second.stdout
    assert fake_crontab.read_text(encoding="utf-8") == table

    removed = invoke("schedule", "cron", "--uninstall")
    assert removed.exit_code == 0 and "removed the mythline block" in removed.stdout
    assert fake_crontab.read_text(encoding="utf-8") == FOREIGN
    again = invoke("schedule", "cron", "--uninstall")
    assert again.exit_code == 0 and "nothing changed" in again.stdout
    assert fake_crontab.read_text(encoding="utf-8") == FOREIGN


def test_install_into_no_crontab_and_out_again(fake_crontab: Path) -> None:
    assert invoke("schedule", "cron", "--install").exit_code == 0
    assert fake_crontab.read_text(encoding="utf-8").startswith(schedule.BEGIN)
    assert invoke("schedule", "cron", "--uninstall").exit_code == 0
    assert fake_crontab.read_text(encoding="utf-8") == ""


def test_install_replaces_an_old_block_and_moves_it_last(fake_crontab: Path) -> None:
    old = "# BEGIN mythline\n*/5 * * * * /old/mythline run world-npcs >> /old.log 2>&1\n# END mythline\n"
    fake_crontab.write_text("# top\n" + old + "0 1 * * * /bin/after\n", encoding="utf-8")
    assert invoke("schedule", "cron", "--install").exit_code == 0
    table = fake_crontab.read_text(encoding="utf-8")
    assert "/old/mythline" not in table
    assert table.startswith("# top\n0 1 * * * /bin/after\n# BEGIN mythline\n")
    assert table.count(schedule.BEGIN) == 1 and table.count(schedule.END) == 1


def test_one_agent_in_and_out_leaves_the_rest(fake_crontab: Path) -> None:
    fake_crontab.write_text(FOREIGN, encoding="utf-8")
    assert invoke("schedule", "cron", "--install").exit_code == 0
    full = fake_crontab.read_text(encoding="utf-8")
    result = invoke("schedule", "cron", "--uninstall", "--agent", "world-npcs")
    assert result.exit_code == 0 and "removed world-npcs's line" in result.stdout
    table = fake_crontab.read_text(encoding="utf-8")
    assert [schedule.job_key(ln) for ln in job_lines(table) if schedule.job_key(ln)] == \
        [a for a in AGENTS if a != "world-npcs"] + [schedule.WATCHDOG]
    assert "# world-npcs:" not in table and table.startswith(FOREIGN)
    assert invoke("schedule", "cron", "--install", "--agent", "world-npcs").exit_code == 0
    assert fake_crontab.read_text(encoding="utf-8") == full


def test_agent_install_next_to_the_fleet_line_is_refused(fake_crontab: Path) -> None:
    assert invoke("schedule", "cron", "--install", "--fleet").exit_code == 0
    before = fake_crontab.read_text(encoding="utf-8")
    result = invoke("schedule", "cron", "--install", "--agent", "world-npcs")
    assert result.exit_code == 2 and "holds the fleet line (run --due)" in result.stderr
    assert fake_crontab.read_text(encoding="utf-8") == before


def test_a_broken_block_is_not_touched(fake_crontab: Path) -> None:
    broken = FOREIGN + "# BEGIN mythline\n* * * * * /bin/true\n"
    fake_crontab.write_text(broken, encoding="utf-8")
    result = invoke("schedule", "cron", "--install")
    assert result.exit_code == 1
    assert "the crontab has a broken mythline block" in result.stderr and "crontab -e" in result.stderr
    assert fake_crontab.read_text(encoding="utf-8") == broken


def test_a_failing_crontab_program_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = tmp_path / "crontab"
    program.write_text("#!/bin/sh\necho 'cron daemon is on holiday' >&2\nexit 3\n", encoding="utf-8")
    program.chmod(0o755)
    monkeypatch.setenv("MYTHLINE_CRONTAB", str(program))
    result = invoke("schedule", "cron", "--install")
    assert result.exit_code == 1
    assert result.stderr == f"mythline: {program} -l failed: cron daemon is on holiday\n"
    monkeypatch.setenv("MYTHLINE_CRONTAB", str(tmp_path / "missing"))
    result = invoke("schedule", "cron", "--install")
    assert result.exit_code == 1 and "install cron" in result.stderr


@needs_crontab
def test_real_crontab_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real crontab keeps exactly what we give it; the user's own table is restored after."""
    from filelock import FileLock

    monkeypatch.delenv("MYTHLINE_CRONTAB", raising=False)
    # Two test runs on one machine must not interleave on the one real table.
    with FileLock(Path(os.environ.get("TMPDIR", "/tmp")) / "mythline-real-crontab-test.lock", timeout=120):
        listing = subprocess.run(["crontab", "-l"], capture_output=True, text=True, timeout=30)
        if listing.returncode != 0 and "no crontab" not in listing.stderr.lower():
            pytest.skip(f"crontab -l does not work here: {listing.stderr.strip()}")
        backup = listing.stdout if listing.returncode == 0 else None
        try:
            assert invoke("schedule", "cron", "--install").exit_code == 0
            installed = subprocess.run(["crontab", "-l"], capture_output=True, text=True, timeout=30).stdout
            assert installed.count(schedule.BEGIN) == 1 and len(job_lines(installed)) >= len(AGENTS)
            assert "nothing changed" in invoke("schedule", "cron", "--install").stdout
            assert invoke("schedule", "cron", "--uninstall").exit_code == 0
            after = subprocess.run(["crontab", "-l"], capture_output=True, text=True, timeout=30).stdout
            assert schedule.BEGIN not in after
            assert after == (backup or "")
        finally:
            if backup is None:
                subprocess.run(["crontab", "-r"], capture_output=True, timeout=30)
            else:
                subprocess.run(["crontab", "-"], input=backup, text=True, capture_output=True, timeout=30)


# -- Task Scheduler ---------------------------------------------------------------------------

def read_task(path: Path) -> tuple[str, ET.Element]:
    data = path.read_bytes()
    assert data[:2] == b"\xff\xfe", "no UTF-16LE byte order mark"
    text = data[2:].decode("utf-16-le")
    assert text.startswith('<?xml version="1.0" encoding="UTF-16"?>\r\n')
    return text, ET.fromstring(data)


def test_windows_writes_one_task_per_agent_and_scripts(tmp_path: Path, home: Path) -> None:
    write_toml('[agents.world-items]\nenabled = false\n[schedule]\nwindows_logon = "S4U"\n')
    out = tmp_path / "tasks"
    (out).mkdir()
    (out / "world-items.xml").write_text("old", encoding="utf-8")  # from before it was disabled
    result = invoke("schedule", "windows", "--out", str(out), "--exe", r"C:\venv\Scripts\mythlinew.exe")
    assert result.exit_code == 0, result.output
    expected = [a for a in AGENTS if a != "world-items"]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{a}.xml" for a in expected] +
                                                           ["watchdog.xml", "install.cmd", "uninstall.cmd"])
    text, root = read_task(out / "world-npcs.xml")
    assert root.tag == f"{{{schedule.TASK_NS}}}Task" and root.get("version") == "1.2"
    assert root.findtext("t:RegistrationInfo/t:URI", namespaces=NS) == r"\Mythline\world-npcs"
    assert "world-npcs" in root.findtext("t:RegistrationInfo/t:Description", namespaces=NS)
    trigger = root.find("t:Triggers/t:TimeTrigger", NS)
    assert [child.tag.split("}")[1] for child in trigger] == ["Repetition", "StartBoundary", "Enabled"]
    assert trigger.findtext("t:Repetition/t:Interval", namespaces=NS) == "PT30M"
    assert trigger.find("t:Repetition/t:Duration", NS) is None  # repeat forever
    assert trigger.findtext("t:StartBoundary", namespaces=NS) == "2024-01-01T00:03:00"
    settings = root.find("t:Settings", NS)
    assert settings.findtext("t:MultipleInstancesPolicy", namespaces=NS) == "IgnoreNew"
    assert settings.findtext("t:StartWhenAvailable", namespaces=NS) == "true"
    assert settings.findtext("t:DisallowStartIfOnBatteries", namespaces=NS) == "false"
    assert settings.findtext("t:StopIfGoingOnBatteries", namespaces=NS) == "false"
    assert settings.findtext("t:ExecutionTimeLimit", namespaces=NS) == "PT35M"
    principal = root.find("t:Principals/t:Principal", NS)
    assert principal.get("id") == "Author" and principal.findtext("t:LogonType", namespaces=NS) == "S4U"
    assert root.find("t:Actions", NS).get("Context") == "Author"
    assert root.findtext("t:Actions/t:Exec/t:Command", namespaces=NS) == r"C:\venv\Scripts\mythlinew.exe"
    config = Path("mythline.toml").absolute()
    assert root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=NS) == f"--home {home} --config {config} run world-npcs"
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")

    starts = {read_task(out / f"{a}.xml")[1].findtext("t:Triggers/t:TimeTrigger/t:StartBoundary", namespaces=NS)
              for a in expected}
    assert len(starts) == len(expected)

    install = (out / "install.cmd").read_bytes()
    assert b"\n" not in install.replace(b"\r\n", b"")
    lines = install.decode("utf-8").split("\r\n")
    for agent in expected:
        assert f'schtasks /Create /TN "Mythline\\{agent}" /XML "%~dp0{agent}.xml" /F || set FAILED=1' in lines
    assert not any("world-items" in ln for ln in lines)
    uninstall = (out / "uninstall.cmd").read_bytes().decode("utf-8").split("\r\n")
    assert [ln for ln in uninstall if ln.startswith("schtasks")] == \
        [f'schtasks /Delete /TN "Mythline\\{a}" /F' for a in expected + ["watchdog"]]
    # The watchdog task: same launcher and config, every 5 minutes.
    _, dog = read_task(out / "watchdog.xml")
    assert dog.findtext("t:Actions/t:Exec/t:Command", namespaces=NS) == r"C:\venv\Scripts\mythlinew.exe"
    assert dog.findtext("t:Actions/t:Exec/t:Arguments", namespaces=NS) == f"--home {home} --config {config} watchdog"
    assert dog.findtext("t:Triggers/t:TimeTrigger/t:Repetition/t:Interval", namespaces=NS) == "PT5M"
    assert 'schtasks /Create /TN "Mythline\\watchdog" /XML "%~dp0watchdog.xml" /F || set FAILED=1' in lines


def test_a_task_reads_the_state_home_and_config_it_was_written_for(tmp_path: Path, home: Path) -> None:
    """A task has no environment: run its arguments with neither MYTHLINE_HOME nor
    MYTHLINE_CONFIG set, from another directory, and it still reads this home and config."""
    config = write_toml('[agents.world-npcs]\ninterval = "90m"\n')
    out = tmp_path / "tasks"
    assert invoke("schedule", "windows", "--out", str(out), "--exe", r"C:\m\mythlinew.exe").exit_code == 0
    env = {k: v for k, v in os.environ.items() if k not in ("MYTHLINE_HOME", "MYTHLINE_CONFIG")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for task in ("world-npcs", "watchdog"):
        text, root = read_task(out / f"{task}.xml")
        arguments = root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=NS)
        assert "KEY" not in text and "sk-" not in text
        words = shlex.split(arguments)  # list2cmdline's quoting, read the same for these paths
        command = words.index("run" if task != "watchdog" else "watchdog")
        # The task's own global options in front of read-only commands that show what they read.
        seen = subprocess.run([sys.executable, "-m", "mythline_cli", *words[:command], "status", "--json"],
                              capture_output=True, text=True, env=env, cwd=elsewhere, timeout=60)
        assert seen.returncode in (0, 1), seen.stderr
        assert json.loads(seen.stdout)["home"] == str(home)
        agents = subprocess.run([sys.executable, "-m", "mythline_cli", *words[:command], "agents", "--json"],
                                capture_output=True, text=True, env=env, cwd=elsewhere, timeout=60)
        assert agents.returncode == 0, agents.stderr
        npcs = next(a for a in json.loads(agents.stdout) if a["agent"] == "world-npcs")
        assert npcs["interval_s"] == 5400.0  # from the config, not the built-in 30m
    assert str(config) in arguments


def test_windows_time_limit_and_password_logon(tmp_path: Path) -> None:
    write_toml('[budget]\nrun_timeout = "29m30s"\n[schedule]\nwindows_logon = "Password"\n'
               '[agents.world-npcs]\ninterval = "90m"\n')
    result = invoke("schedule", "windows", "--out", str(tmp_path / "t"), "--agent", "world-npcs",
                    "--exe", r"C:\x\mythlinew.exe")
    assert result.exit_code == 0, result.output
    _, root = read_task(tmp_path / "t" / "world-npcs.xml")
    assert root.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=NS) == "PT35M"  # ceil(34.5m)
    assert root.findtext("t:Triggers/t:TimeTrigger/t:Repetition/t:Interval", namespaces=NS) == "PT1H30M"
    assert root.findtext("t:Principals/t:Principal/t:LogonType", namespaces=NS) == "Password"
    install = (tmp_path / "t" / "install.cmd").read_text(encoding="utf-8")
    assert '/XML "%~dp0world-npcs.xml" /F /RU "%USERDOMAIN%\\%USERNAME%" /RP * || set FAILED=1' in install


def test_windows_guesses_the_launcher_off_windows_and_says_so(tmp_path: Path) -> None:
    result = invoke("schedule", "windows", "--out", str(tmp_path / "t"), "--agent", "world-npcs")
    assert result.exit_code == 0
    assert "not on Windows, so the tasks run" in result.stderr and "pass --exe" in result.stderr
    _, root = read_task(tmp_path / "t" / "world-npcs.xml")
    command = root.findtext("t:Actions/t:Exec/t:Command", namespaces=NS)
    assert command.endswith("\\mythlinew.exe") and "/" not in command


def test_windowless_command_on_windows() -> None:
    command, lead, guess = schedule.windowless_command(
        which=lambda name: r"C:\venv\Scripts\mythline.exe", executable=r"C:\venv\Scripts\python.exe", windows=True)
    assert Path(command).name == "mythlinew.exe" and lead == [] and guess is False


@pytest.mark.parametrize("interval,iso", [(60, "PT1M"), (90, "PT1M"), (1800, "PT30M"), (5400, "PT1H30M"),
                                          (7200, "PT2H"), (86400, "P1D"), (90000, "P1DT1H"),
                                          (31 * 86400, "P31D")])
def test_task_interval(interval: float, iso: str) -> None:
    assert schedule.task_interval(interval) == iso


def _validator():
    if not XSD.is_file():
        pytest.skip(f"the task schema is not here ({XSD})")
    try:
        from lxml import etree
    except ImportError:
        etree = None
    if etree is not None:
        schema = etree.XMLSchema(etree.parse(str(XSD)))

        def check(path: Path) -> tuple[bool, str]:
            ok = schema.validate(etree.parse(str(path)))
            return ok, str(schema.error_log)
        return check
    if shutil.which("xmllint") is None:
        pytest.skip("neither lxml nor xmllint (apt-get install libxml2-utils) is available")

    def check(path: Path) -> tuple[bool, str]:
        proc = subprocess.run(["xmllint", "--noout", "--schema", str(XSD), str(path)], capture_output=True,
                              text=True, timeout=60)
        return proc.returncode == 0, proc.stderr
    return check


@pytest.mark.parametrize("interval", ["1m", "30m", "2h", "1d", "31d", "1h30m"])
@pytest.mark.parametrize("logon", ["InteractiveToken", "S4U", "Password"])
def test_task_xml_validates_against_the_schema(interval: str, logon: str, tmp_path: Path) -> None:
    check = _validator()
    write_toml(f'[defaults]\ninterval = "{interval}"\n[schedule]\nwindows_logon = "{logon}"\n')
    out = tmp_path / "tasks"
    assert invoke("schedule", "windows", "--out", str(out), "--exe", r"C:\v\mythlinew.exe").exit_code == 0
    for path in sorted(out.glob("*.xml")):
        ok, errors = check(path)
        assert ok, f"{path.name}: {errors}"


def test_the_schema_check_can_fail(tmp_path: Path) -> None:
    check = _validator()
    plans, _ = schedule.plan_windows(parse_config({}), agent="world-npcs", exe=r"C:\v\mythlinew.exe")
    text = schedule.task_xml(plans[0])
    # StartBoundary before Repetition: Windows' own order is required.
    moved = re.sub(r"(\s*<Repetition>.*?</Repetition>)(\s*<StartBoundary>.*?</StartBoundary>)", r"\2\1", text,
                   flags=re.S)
    assert moved != text
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"\xff\xfe" + moved.encode("utf-16-le"))
    ok, _ = check(bad)
    assert not ok


# -- the repo's examples do not drift ---------------------------------------------------------

def _regenerate_command(line: str, prefix: str) -> list[str]:
    assert line.startswith(prefix), line
    words = shlex.split(line[len(prefix):])
    assert words[0] == "mythline"
    return words[1:]


def test_crontab_example_is_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    committed = (ROOT / "crontab.example").read_bytes()
    header = committed.decode("utf-8").splitlines()[1]
    args = _regenerate_command(header, "# Regenerate: ")
    command = "mythline " + " ".join(shlex.quote(a) for a in args)
    work = tmp_path / "regen"
    work.mkdir()
    monkeypatch.chdir(work)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert (work / "crontab.example").read_bytes() == committed, \
        f"crontab.example is out of date; regenerate it from the repo root with: {command}"


def test_windows_tasks_are_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = ROOT / "windows_tasks"
    install = (folder / "install.cmd").read_bytes().decode("utf-8").split("\r\n")
    header = next(ln for ln in install if ln.startswith("rem Regenerate: "))
    args = _regenerate_command(header, "rem Regenerate: ")
    command = header[len("rem Regenerate: "):]
    work = tmp_path / "regen"
    work.mkdir()
    monkeypatch.chdir(work)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    fresh = work / "windows_tasks"
    committed = {p.name for p in folder.iterdir() if p.suffix in (".xml", ".cmd")}
    assert committed == {p.name for p in fresh.iterdir()}, \
        f"windows_tasks/ is out of date; regenerate it from the repo root with: {command}"
    for path in sorted(fresh.iterdir()):
        assert (folder / path.name).read_bytes() == path.read_bytes(), \
            f"windows_tasks/{path.name} is out of date; regenerate it from the repo root with: {command}"


def test_the_examples_use_the_documented_placeholders() -> None:
    cron = (ROOT / "crontab.example").read_text(encoding="utf-8")
    assert "'/home/you/.venv/bin/mythline' run world-npcs" in cron
    assert "MYTHLINE_HOME='/home/you/.local/share/mythline'" in cron
    _, root = read_task(ROOT / "windows_tasks" / "world-npcs.xml")
    assert root.findtext("t:Actions/t:Exec/t:Command", namespaces=NS) == \
        r"C:\Users\you\mythline\.venv\Scripts\mythlinew.exe"
    docs = (ROOT / "docs" / "scheduling.md").read_text(encoding="utf-8")
    assert "mythline schedule cron --exe /home/you/.venv/bin/mythline" in docs


# -- the windowless launcher ------------------------------------------------------------------

@pytest.mark.parametrize("argv,name", [
    (["run", "world-npcs"], "world-npcs"),
    (["--config", "run", "run", "world-lore", "--model", "x"], "world-lore"),
    (["-c", "c.toml", "run", "--model", "world-npcs", "quest-chains"], "quest-chains"),
    (["run", "--due", "--jobs", "3"], "fleet"),
    (["run", "../../etc"], "fleet"),
    (["run", "eastern-zones"], "eastern-zones"),  # a custom agent (its config is not read to choose)
    (["run", "CON"], "fleet"),
    (["run", "fleet"], "fleet"),
    (["status"], "fleet"),
])
def test_windowless_log_name(argv: list[str], name: str) -> None:
    from mythline_cli.__main__ import log_name

    assert log_name(argv) == name


LAUNCH = """
import sys
sys.argv = ["mythlinew"] + sys.argv[1:]
from mythline_cli.__main__ import main_windowless
main_windowless()
"""


def _without_console(*args: str) -> int:
    # Closed stdout and stderr: Python sets sys.stdout and sys.stderr to None, as under pythonw.
    def close_streams() -> None:
        os.close(1)
        os.close(2)

    proc = subprocess.run([sys.executable, "-c", LAUNCH, *args], stdin=subprocess.DEVNULL,
                          preexec_fn=close_streams, timeout=120)
    return proc.returncode


@pytest.mark.skipif(os.name == "nt", reason="closing the standard streams before exec is POSIX")
def test_windowless_run_writes_its_output_to_the_agents_log(home: Path) -> None:
    code = _without_console("run", "world-npcs")
    assert code == 2  # no API key
    log = (home / "logs" / "world-npcs.log").read_text(encoding="utf-8")
    assert "mythline: OPENROUTER_API_KEY is not set" in log
    assert _without_console("home") == 0
    assert (home / "logs" / "fleet.log").read_text(encoding="utf-8") == f"{home}\n"


@pytest.mark.skipif(os.name == "nt", reason="closing the standard streams before exec is POSIX")
def test_a_windowless_run_given_home_logs_and_records_there(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "task-home"
    code = _without_console("--home", str(other), "run", "world-npcs")
    assert code == 2  # no API key
    assert "OPENROUTER_API_KEY is not set" in (other / "logs" / "world-npcs.log").read_text(encoding="utf-8")
    assert (other / "agents" / "world-npcs" / "start-failure.json").is_file()
    assert not (home / "logs").exists() and not (home / "agents").exists()


def test_gui_script_is_declared() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["gui-scripts"] == {"mythlinew": "mythline_cli.__main__:main_windowless"}


# -- imports ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["schedule", "cron"], ["schedule", "cron", "--fleet"],
                                  ["schedule", "windows", "--out", "tasks"]], ids=" ".join)
def test_schedule_does_not_import_the_llm_stack(args: list[str]) -> None:
    report = run_app(args)
    assert report.returncode == 0, report.stderr
    assert report.llm_stack == set()


@pytest.mark.parametrize("line,key", [
    ("3-59/30 * * * * MYTHLINE_HOME='/h' '/x/mythline' run world-npcs >> '/h/logs/world-npcs.log' 2>&1",
     "world-npcs"),
    ("* * * * * '/x/mythline' run --due >> '/h/logs/fleet.log' 2>&1", "--due"),
    ("* * * * * '/x/mythline' run --model gpt world-lore --force >> /log 2>&1", "world-lore"),
    ("* * * * * /usr/bin/python3 -m mythline_cli run quest-chains", "quest-chains"),
    ("* * * * * /bin/backup --quiet", None),
])
def test_job_key(line: str, key: str | None) -> None:
    assert schedule.job_key(line) == key


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    assert invoke("schedule", "cron", "--out", str(tmp_path / "c" / "lines.cron")).exit_code == 0
    assert invoke("schedule", "windows", "--out", str(tmp_path / "t"), "--exe", r"C:\v\w.exe").exit_code == 0
    for path in [tmp_path / "c" / "lines.cron", *sorted((tmp_path / "t").iterdir())]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


# -- what the shell set reaches the schedule --------------------------------------------------

def test_the_shells_model_and_base_url_are_carried_not_dropped(tmp_path: Path, home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYTHLINE_MODEL", "vendor/model-x")
    monkeypatch.setenv("MYTHLINE_BASE_URL", "http://127.0.0.1:8000/v1")
    result = invoke("schedule", "cron", "--agent", "world-npcs", "--exe", EXE)
    assert result.exit_code == 0, result.output
    for line in job_lines(result.stdout):
        assert f"MYTHLINE_HOME='{home}' MYTHLINE_BASE_URL='http://127.0.0.1:8000/v1' " \
               f"MYTHLINE_MODEL='vendor/model-x' '{EXE}' " in line
    out = tmp_path / "tasks"
    assert invoke("schedule", "windows", "--out", str(out), "--agent", "world-npcs", "--exe", "C:\\m.exe").exit_code == 0
    _, root = read_task(out / "world-npcs.xml")
    assert root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=NS) == \
        f"--home {home} run world-npcs --model vendor/model-x --base-url http://127.0.0.1:8000/v1"


def test_a_base_url_with_a_password_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch,
                                               fake_crontab: Path) -> None:
    monkeypatch.setenv("MYTHLINE_BASE_URL", "https://user:hunter2-secret@proxy.example/v1")
    for args in (["cron"], ["cron", "--install"], ["windows", "--out", "tasks"]):
        result = invoke("schedule", *args)
        assert result.exit_code == 2
        assert result.stderr.startswith("mythline: configuration: MYTHLINE_BASE_URL: carries a user name or password")
        assert "hunter2" not in result.stderr
        assert "hunter2" not in result.stdout
    assert not fake_crontab.exists() and not Path("tasks").exists()


def test_a_key_store_cron_would_not_find_is_named_in_the_lines(tmp_path: Path, home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = invoke("schedule", "cron", "--exe", EXE)
    for line in job_lines(result.stdout):
        # With no config file, the user config dir too: where this shell would find one.
        assert f" MYTHLINE_KEYS_FILE='{tmp_path / 'xdg' / 'mythline' / 'keys.json'}' " \
               f"XDG_CONFIG_HOME='{tmp_path / 'xdg'}' '{EXE}' " in line
    monkeypatch.delenv("XDG_CONFIG_HOME")
    text = invoke("schedule", "cron", "--exe", EXE).stdout
    assert "MYTHLINE_KEYS_FILE" not in text and "XDG_CONFIG_HOME" not in text


def test_with_no_config_file_the_lines_look_for_one_where_this_shell_does(tmp_path: Path, home: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert not Path("mythline.toml").exists()
    result = invoke("schedule", "cron", "--exe", EXE)
    assert result.exit_code == 0, result.output
    for line in job_lines(result.stdout):
        assert "MYTHLINE_CONFIG" not in line and f" XDG_CONFIG_HOME='{tmp_path / 'xdg'}' " in line
    # A file given names itself: no lookup to carry.
    config = write_toml("")
    for line in job_lines(invoke("schedule", "cron", "--exe", EXE).stdout):
        assert f"MYTHLINE_CONFIG='{config}'" in line and "XDG_CONFIG_HOME" not in line


def test_a_config_only_cron_would_read_is_refused(tmp_path: Path, home: Path, fake_crontab: Path) -> None:
    # Cron starts jobs in the passwd home: a mythline.toml there is read by the job, not by this
    # shell (started elsewhere, with no config found).
    stray = Path(os.environ["HOME"]) / "mythline.toml"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text('[defaults]\ninterval = "5m"\n', encoding="utf-8")
    for args in (["cron"], ["cron", "--install"]):
        result = invoke("schedule", *args, "--exe", EXE)
        assert result.exit_code == 2, result.output
        assert result.stderr == (f"mythline: cron starts jobs in {stray.parent}, so the lines would read {stray}, "
                                 "which this shell does not (it uses the built-in defaults); pass --config "
                                 f"{stray}, or move that file into {tmp_path / 'user-home' / '.config' / 'mythline'}"
                                 "\n")
    assert not fake_crontab.exists()
    result = invoke("--config", str(stray), "schedule", "cron", "--exe", EXE)
    assert result.exit_code == 0 and f"MYTHLINE_CONFIG='{stray}'" in result.stdout


def test_the_lines_run_the_mythline_that_ran_not_the_first_on_path(tmp_path: Path, home: Path) -> None:
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "mythline").write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    (decoy / "mythline").chmod(0o755)
    env = {**os.environ, "PATH": f"{decoy}{os.pathsep}{os.environ['PATH']}"}
    script = Path(sys.executable).with_name("mythline")
    ran = subprocess.run([str(script), "schedule", "cron", "--agent", "world-npcs"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert f" '{script}' run world-npcs " in job_lines(ran.stdout)[0]
    module = subprocess.run([sys.executable, "-m", "mythline_cli", "schedule", "cron", "--agent", "world-npcs"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert f" '{sys.executable}' -m mythline_cli run world-npcs " in job_lines(module.stdout)[0]
    assert str(decoy) not in ran.stdout + module.stdout


def test_a_variable_line_in_the_block_is_named_not_quoted() -> None:
    block = f"{schedule.BEGIN}\nOPENROUTER_API_KEY=sk-or-v1-abcdefghijk\n* * * * * /bin/true\n{schedule.END}\n"
    jobs = schedule.Crontab.parse(block).jobs()
    assert set(jobs) == {"variable OPENROUTER_API_KEY", "line 2 of the block"}
