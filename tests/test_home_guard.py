"""The suite's own isolation: a test that undoes its monkeypatches still cannot reach the real
user home, and the guard fails a suite that writes there."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mythline_cli import paths

import home_guard

TESTS = Path(__file__).resolve().parent


def test_undoing_the_monkeypatches_keeps_the_session_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    guard = home_guard.GUARD
    assert guard is not None
    for path in (paths.home(), paths.user_config_dir(), Path.home(), Path("~").expanduser()):
        assert guard.session in path.parents, f"{path} is outside the session's own directory"
    for root in guard.roots:
        assert guard.session not in root.parents  # the real dirs, from before the session began


def test_each_test_has_a_user_home_of_its_own(tmp_path: Path) -> None:
    assert Path.home() == tmp_path / "user-home"
    assert tmp_path in paths.user_config_dir().parents
    import platformdirs

    for name in ("user_data_dir", "user_config_dir", "user_cache_dir", "user_state_dir"):
        assert tmp_path in Path(getattr(platformdirs, name)("mythline")).parents, name


def run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tests: str) -> tuple[pytest.RunResult, Path]:
    """Run a tiny suite with the guard in a fresh process whose "real" home is a tmp dir."""
    real = pytester.path / "real-home"
    real.mkdir()
    monkeypatch.setenv("HOME", str(real))
    for var in (*home_guard.XDG_VARS, "MYTHLINE_HOME", "USERPROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *sys.path]))
    pytester.makeconftest('pytest_plugins = ["home_guard"]\n')
    pytester.makepyfile(test_inner=tests)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider"), real


def test_the_guard_fails_a_suite_that_writes_into_the_real_home(pytester: pytest.Pytester,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    result, real = run_inner(pytester, monkeypatch, f'''
from pathlib import Path

def test_writes_a_ledger_into_the_real_data_dir():
    target = Path({str(pytester.path / "real-home")!r}) / ".local" / "share" / "mythline" / "ledger.json"
    target.parent.mkdir(parents=True)
    target.write_text("{{}}")

def test_stays_in_its_tmp_path(tmp_path):
    (tmp_path / "ledger.json").write_text("{{}}")
''')
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.stdout.str()
    assert "the test session wrote into the real user dirs:" in output
    assert f"{real / '.local' / 'share' / 'mythline' / 'ledger.json'} (created)" in output
    result.assert_outcomes(passed=2)  # the session fails as a whole: no test was blamed


def test_the_guard_fails_a_test_that_undoes_its_isolation(pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    result, real = run_inner(pytester, monkeypatch, '''
import os
from pathlib import Path

def test_undoes_and_writes(monkeypatch, tmp_path):
    monkeypatch.setenv("MYTHLINE_HOME", str(tmp_path))
    monkeypatch.undo()
    home = Path(os.environ["MYTHLINE_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "ledger.json").write_text("{}")

def test_the_next_test_is_not_blamed():
    pass
''')
    output = result.stdout.str()
    assert "the test wrote outside its tmp dirs" in output and "mythline-home/ledger.json" in output
    result.assert_outcomes(passed=2, errors=1)
    assert not (real / ".local" / "share" / "mythline").exists()


def test_a_clean_suite_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result, real = run_inner(pytester, monkeypatch, '''
from mythline_cli import paths

def test_writes_its_state_home(monkeypatch, tmp_path):
    monkeypatch.setenv("MYTHLINE_HOME", str(tmp_path / "state"))
    paths.home().mkdir()
    (paths.home() / "ledger.json").write_text("{}")
''')
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert list(real.iterdir()) == []
