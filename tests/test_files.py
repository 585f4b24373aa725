"""Atomic replace, torn JSONL tails, corrupt state moved aside, and the slug function."""

from __future__ import annotations

import errno
import json
import os

import pytest

from mythline_cli import files
from mythline_cli.checkpoint import Checkpoint
from mythline_cli.slug import slug


def test_write_json_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "state.json"
    files.write_json(path, {"n": 1})
    files.write_json(path, {"n": 2})
    assert json.loads(path.read_text()) == {"n": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, err):
    path = tmp_path / "d" / "state.json"
    files.write_json(path, {"old": True})

    def boom(fd):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(files.os, "fsync", boom)
    with pytest.raises(OSError):
        files.write_json(path, {"new": True})
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_torn_jsonl_tail_keeps_complete_lines_at_every_cut(tmp_path):
    path = tmp_path / "events.jsonl"
    files.append_jsonl(path, {"i": 1})
    files.append_jsonl(path, {"i": 2})
    whole = path.read_bytes()
    first_len = whole.index(b"\n") + 1
    for cut in range(first_len, len(whole)):
        path.write_bytes(whole[:cut])
        assert [e["i"] for e in files.iter_jsonl(path)] == [1]
        files.append_jsonl(path, {"i": 3})
        # Cut just before its newline, the second line is whole and the fresh-line rule completes it.
        expected = [1, 2, 3] if cut == len(whole) - 1 else [1, 3]
        assert [e["i"] for e in files.iter_jsonl(path)] == expected
        assert [e["i"] for e in files.tail_jsonl(path, 5)] == expected


@pytest.mark.parametrize("content", [b"", b"{\"topics\": {", b"\xff\xfe garbage", b"[1, 2, 3]", b"{\"topics\": 5}"])
def test_corrupt_checkpoint_is_moved_aside(home, content):
    path = home / "agents" / "world-npcs" / "checkpoint.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    ck = Checkpoint.load("world-npcs")
    assert ck.data["topics"] == {} and ck.moved_aside is not None
    assert ck.moved_aside.name.startswith("checkpoint.json.corrupt-")
    assert ck.moved_aside.read_bytes() == content
    assert not path.exists()


def test_corrupt_checkpoint_run_carries_on_and_says_so(home, config, llm_server):
    from typer.testing import CliRunner

    from conftest import lore_responder
    from mythline_cli.cli import app

    path = home / "agents" / "world-npcs" / "checkpoint.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    llm_server.responder = lore_responder("world-npcs")
    result = CliRunner().invoke(app, ["run", "world-npcs"])
    assert result.exit_code == 0
    assert result.stderr.startswith("mythline: world-npcs: checkpoint was unreadable; moved aside to ")
    assert result.stderr.count("\n") == 1


HOSTILE = ["Thrall", "thrall", "Thrall!", "", "..", ".", "/", "\\", "a/../../b", "CON", "nul", "COM1", "LPT9.txt",
           "x\x00y", "Ünïcødé Ærthas", "龍王", "a" * 500, " leading", "trailing. ", "C:\\Windows", "%2e%2e"]


def test_slug_is_safe_and_distinct_for_hostile_names():
    seen = set()
    for topic in HOSTILE:
        s = slug(topic)
        assert s not in seen, topic
        seen.add(s)
        assert 0 < len(s) <= 70
        assert all(c.isascii() and (c.isalnum() or c == "-") for c in s), s
        assert s.split("-")[0].upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT9"} or "-" in s
        assert slug(topic) == s  # stable


@pytest.mark.parametrize("content", [b"", b"{\"state\": \"ok\"", b"\x00\x01garbage", b"[\"not\", \"a\", \"dict\"]"])
def test_corrupt_heartbeat_is_moved_aside_and_the_run_carries_on(home, config, llm_server, content):
    from typer.testing import CliRunner

    from conftest import lore_responder
    from mythline_cli.cli import app

    path = home / "agents" / "world-npcs" / "heartbeat.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    llm_server.responder = lore_responder("world-npcs")
    result = CliRunner().invoke(app, ["run", "world-npcs"])
    assert result.exit_code == 0
    assert result.stderr.startswith("mythline: world-npcs: heartbeat was unreadable; moved aside to ")
    assert result.stderr.count("\n") == 1
    (moved,) = path.parent.glob("heartbeat.json.corrupt-*")
    assert moved.read_bytes() == content
    assert json.loads(path.read_text())["state"] == "ok"


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("step", ["write", "replace", "mkstemp"])
def test_io_error_at_any_step_keeps_the_old_file(tmp_path, monkeypatch, err, step):
    path = tmp_path / "d" / "state.json"
    files.write_json(path, {"old": True})

    def boom(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    if step == "write":
        real_fdopen = os.fdopen

        class Broken:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                boom()

        monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: Broken(real_fdopen(fd, mode)))
    elif step == "replace":
        monkeypatch.setattr(files.os, "replace", boom)
    else:
        monkeypatch.setattr(files.tempfile, "mkstemp", boom)
    with pytest.raises(OSError) as info:
        files.write_json(path, {"new": True})
    assert info.value.errno == err
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_io_error_on_append_leaves_complete_lines(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    files.append_jsonl(path, {"i": 1})

    def boom(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(files.os, "write", boom)
        with pytest.raises(OSError):
            files.append_jsonl(path, {"i": 2})
    assert [e["i"] for e in files.iter_jsonl(path)] == [1]


def test_windows_sharing_violations_are_retried_then_raised(tmp_path, monkeypatch):
    path = tmp_path / "d" / "state.json"
    files.write_json(path, {"old": True})
    monkeypatch.setattr(files.sys, "platform", "win32")
    monkeypatch.setattr(files.time, "sleep", lambda s: None)
    real_replace = os.replace
    calls = {"n": 0}

    def busy_twice(src, dst):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise PermissionError(13, "The process cannot access the file")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", busy_twice)
    files.write_json(path, {"new": True})
    assert json.loads(path.read_text()) == {"new": True} and calls["n"] == 3

    def always_busy(src, dst):
        raise PermissionError(13, "The process cannot access the file")

    monkeypatch.setattr(files.os, "replace", always_busy)
    with pytest.raises(PermissionError):
        files.write_json(path, {"newer": True})
    assert json.loads(path.read_text()) == {"new": True}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]
