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

    from mythline_cli.cli import app

    from helpers import lore_responder

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

    from mythline_cli.cli import app

    from helpers import lore_responder

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
        monkeypatch.setattr(files.os, "write", boom)
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


def _count_fsyncs(monkeypatch) -> list[str]:
    """Record every fsync as "dir" or "file"."""
    calls: list[str] = []
    real = os.fsync

    def counted(fd):
        import stat

        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", counted)
    return calls


@pytest.mark.parametrize("kwargs, expected", [
    ({}, ["file", "dir"]),
    ({"sync_dir": False}, ["file"]),  # the data is durable, the rename may be lost
    ({"durable": False}, []),
])
def test_write_json_fsyncs_as_asked(tmp_path, monkeypatch, kwargs, expected):
    path = tmp_path / "d" / "state.json"
    files.write_json(path, {"old": True})
    calls = _count_fsyncs(monkeypatch)
    files.write_json(path, {"new": True}, **kwargs)
    assert calls == expected
    assert json.loads(path.read_text()) == {"new": True}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_compact_json_is_one_line_and_reads_back(tmp_path):
    path = tmp_path / "ledger.json"
    data = {"windows": {"day:2026-05-05": {"agents": {"ä": {"usd": 0.1}}}}, "reservations": {}}
    files.write_json(path, data, compact=True)
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") == 1 and text.endswith("}\n") and "ä" in text
    assert files.read_json(path) == data


def test_writes_make_a_missing_directory(tmp_path):
    files.write_json(tmp_path / "a" / "b" / "state.json", {"n": 1})
    files.append_jsonl_many(tmp_path / "c" / "d" / "log.jsonl", [{"n": 1}])
    assert json.loads((tmp_path / "a" / "b" / "state.json").read_text()) == {"n": 1}
    assert list(files.iter_jsonl(tmp_path / "c" / "d" / "log.jsonl")) == [{"n": 1}]


def test_append_many_is_one_write_and_one_fsync(tmp_path, monkeypatch):
    path = tmp_path / "journal.jsonl"
    files.append_jsonl(path, {"seq": 1})
    path.write_bytes(path.read_bytes() + b'{"seq": 2, "to')  # a torn tail
    writes: list[bytes] = []
    real_write = os.write
    monkeypatch.setattr(files.os, "write", lambda fd, data: (writes.append(bytes(data)), real_write(fd, data))[1])
    calls = _count_fsyncs(monkeypatch)
    files.append_jsonl_many(path, [{"seq": 2}, {"seq": 3}, {"seq": 4}])
    assert len(writes) == 1 and writes[0].startswith(b"\n") and calls == ["file"]
    assert [r["seq"] for r in files.iter_jsonl(path)] == [1, 2, 3, 4]
    files.append_jsonl_many(path, [])  # nothing to write: nothing written
    assert len(writes) == 1


def test_a_new_jsonl_file_gets_its_directory_entry_fsynced(tmp_path, monkeypatch):
    calls = _count_fsyncs(monkeypatch)
    files.append_jsonl(tmp_path / "new.jsonl", {"n": 1})
    assert calls == ["file", "dir"]
    calls.clear()
    files.append_jsonl(tmp_path / "new.jsonl", {"n": 2})
    assert calls == ["file"]


def test_short_writes_are_completed(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(files.os, "write", lambda fd, data: real_write(fd, bytes(data)[:7]))
    files.write_json(tmp_path / "state.json", {"key": "x" * 100})
    files.append_jsonl_many(tmp_path / "log.jsonl", [{"n": i, "pad": "y" * 50} for i in range(3)])
    monkeypatch.undo()
    assert json.loads((tmp_path / "state.json").read_text()) == {"key": "x" * 100}
    assert [r["n"] for r in files.iter_jsonl(tmp_path / "log.jsonl")] == [0, 1, 2]


@pytest.mark.parametrize("text", ["split \ud83d emoji", "\udc80\x00\ud800", "nul \x00 and \U0001f600"],
                         ids=["lone-high", "lone-low-nul", "nul-and-emoji"])
def test_any_text_is_written_and_reads_back_the_same(tmp_path, text):
    path = tmp_path / "state.json"
    for compact in (False, True):
        files.write_json(path, {"content": text}, compact=compact)
        assert files.read_json(path) == {"content": text}
    files.append_jsonl(tmp_path / "log.jsonl", {"content": text})
    assert list(files.iter_jsonl(tmp_path / "log.jsonl")) == [{"content": text}]
    assert files.tail_jsonl(tmp_path / "log.jsonl", 1) == [{"content": text}]


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"n": 1' + b"0" * 5000 + b"}"],
                         ids=["nested-too-deep", "int-past-digit-limit"])
def test_json_python_cannot_hold_is_a_corrupt_file(tmp_path, raw):
    path = tmp_path / "state.json"
    path.write_bytes(raw)
    with pytest.raises(files.CorruptFile):
        files.read_json(path)
    (tmp_path / "log.jsonl").write_bytes(raw + b"\n" + b'{"ok": 1}\n')
    assert list(files.iter_jsonl(tmp_path / "log.jsonl")) == [{"ok": 1}]
    assert files.tail_jsonl(tmp_path / "log.jsonl", 2) == [{"ok": 1}]
