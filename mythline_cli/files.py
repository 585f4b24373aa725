"""The one place that writes: atomic JSON replace, JSONL append, tolerant reads, the locked
read-modify-write of a shared JSON file.

After a crash every file is its old or its new version; how, and which files skip the
fsyncs: docs/how-it-works.md, "Crash safety".
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from .clock import utcnow
from .errors import CorruptFile  # noqa: F401 - re-exported: files.CorruptFile

T = TypeVar("T")

# Windows refuses os.replace (and sometimes a read) while another process has the file
# open without sharing: a reader, an antivirus scan, the indexer. Those holds are short:
# retry with a growing pause, about five seconds in all, before giving up.
_SHARING_PAUSES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.0, 1.0)


TEMP_SUFFIX = ".tmp"
# A temp file lives for the milliseconds of one write; one this old is a leftover whatever its
# pid says (pids are reused).
STALE_TEMP_AGE = 3600.0


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def dumps_compact(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"


def encode(data: Any, *, compact: bool = False) -> bytes:
    """``data`` as UTF-8 JSON, whatever text it holds.

    A lone surrogate (half of a split character, which a provider can send as ``\\ud83d``)
    has no UTF-8 form: then the whole document is written with ``\\uXXXX`` escapes instead,
    which JSON reads back to the same text. Lossless, and only on that rare path."""
    text = dumps_compact(data) if compact else dumps(data)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        if compact:
            return (json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
        return (json.dumps(data, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable on POSIX; directories cannot be opened on Windows.
    if sys.platform == "win32":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _shared(action: Callable[[], T]) -> T:
    """``action()``, retried on Windows sharing violations (PermissionError) for a few seconds."""
    for pause in _SHARING_PAUSES:
        try:
            return action()
        except PermissionError:
            if sys.platform != "win32":
                raise
            time.sleep(pause)
    return action()


def _replace(src: str, dst: Path) -> None:
    _shared(lambda: os.replace(src, dst))


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a short write is not a success)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        view = view[written:]


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = True, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file.

    ``durable=False`` skips the fsyncs: still all-or-nothing when a process dies, but after a
    power cut the file may come back empty, which its readers handle (heartbeats are moved
    aside and rewritten). Only for files that are rewritten often and lose nothing if reset.
    ``sync_dir=False`` keeps the fsync of the data (a power cut leaves the old or the complete
    new file, never an empty one) but not the directory's: the rename itself may be lost,
    leaving the old version. Only for files whose lost update is recovered from elsewhere.
    """
    # The writer's pid in the name lets a later run tell a dead writer's leftover from a live one's.
    prefix, suffix = f".{path.name}.", f"-{os.getpid()}{TEMP_SUFFIX}"
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    except FileNotFoundError:  # the directory is made on first use, not checked every time
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    try:
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        _replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable and sync_dir:
        _fsync_dir(path.parent)


def write_json(path: Path, data: Any, *, durable: bool = True, sync_dir: bool = True, compact: bool = False) -> None:
    """``compact``: one line without indentation (the C encoder: several times faster)."""
    write_bytes_atomic(path, encode(data, compact=compact), durable=durable, sync_dir=sync_dir)


def update_json(path: Path, lock: Path, change: Callable[[Any], T], *, load: Callable[[Path], Any],
                timeout: float) -> T:
    """Apply ``change`` to ``load(path)`` under ``lock``, write the data back if it changed
    (or the file did not exist), and return what ``change`` returned."""
    import copy

    from . import locking

    lock.parent.mkdir(parents=True, exist_ok=True)
    held = locking.acquire(lock, timeout)  # LockTimeout when another process kept it
    try:
        data = load(path)
        before = copy.deepcopy(data)
        result = change(data)
        # Most updates find nothing new (a watchdog pass, a quiet breaker): leave the file alone.
        if data != before or not path.exists():
            write_json(path, data)
    finally:
        held.release()
    return result


def read_json(path: Path) -> Any | None:
    """The parsed file, ``None`` when it does not exist, ``CorruptFile`` when unreadable."""
    try:
        raw = _shared(path.read_bytes)
    except FileNotFoundError:
        return None
    if not raw.strip():
        raise CorruptFile(path, "empty file")
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # undecodable bytes, bad JSON, a number past int's digit limit
        raise CorruptFile(path, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise CorruptFile(path, "not valid JSON (nested too deep)") from None


def quarantine_corrupt(path: Path, now: datetime | None = None, *, keep: bool = False) -> Path:
    """Move a corrupt file aside as ``<name>.corrupt-<timestamp>`` and return the new path.
    ``keep``: copy it instead, leaving the original in place until a good one replaces it."""
    stamp = (now or utcnow()).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    if keep:
        write_bytes_atomic(target, _shared(path.read_bytes))
    else:
        _replace(str(path), target)
    return target


def clean_temps(directory: Path, *, now: float | None = None) -> list[Path]:
    """Remove the temp files our atomic writes left in ``directory`` when a process was killed
    between writing and renaming one (``.NAME.RANDOM-PID.tmp``): those whose writer is gone,
    or older than ``STALE_TEMP_AGE``. Nothing else is touched. Returns what was removed."""
    from .procs import pid_alive

    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)) or not entry.is_file(follow_symlinks=False):
            continue
        pid_text = name[:-len(TEMP_SUFFIX)].rpartition("-")[2]
        try:
            stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_AGE or (
                pid_text.isdigit() and int(pid_text) != os.getpid() and not pid_alive(int(pid_text)))
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # gone meanwhile, or not ours to remove: the next run tries again
    return removed


def append_jsonl(path: Path, record: dict[str, Any], *, fsync: bool = True) -> None:
    """Append one JSON line; start on a fresh line if an earlier write was torn."""
    append_jsonl_many(path, [record], fsync=fsync)


def append_jsonl_many(path: Path, records: list[dict[str, Any]], *, fsync: bool = True) -> None:
    """Append JSON lines with one ``write`` (and one fsync); start on a fresh line if an
    earlier write was torn. A crash keeps a prefix of the lines (and maybe a torn last one,
    which readers skip)."""
    if not records:
        return
    lines = b"".join(encode(r, compact=True) for r in records)
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:  # the directory is made on first use, not checked every time
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":
                lines = b"\n" + lines
        _write_all(fd, lines)
        if fsync:
            os.fsync(fd)
            if not size:
                # Just created: make its directory entry durable too (once per file).
                _fsync_dir(path.parent)
    finally:
        os.close(fd)


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete, parseable object line of ``path``; torn or garbled lines are skipped."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    with fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                # The tail of a write that never finished.
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                yield obj


def tail_jsonl(path: Path, n: int) -> list[dict[str, Any]]:
    """The last ``n`` complete lines of ``path`` without reading all of a large file."""
    if n <= 0:
        return []
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return []
    block = 8 * 1024
    with path.open("rb") as fh:
        start = size
        data = b""
        while start > 0 and data.count(b"\n") <= n:
            start = max(0, start - block)
            fh.seek(start)
            data = fh.read(size - start)
            block *= 2
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first piece may be a partial line
    # The last piece is empty after a final newline, or a torn tail: drop it either way.
    lines = lines[:-1]
    out: list[dict[str, Any]] = []
    for raw in reversed(lines):  # newest first, and stop as soon as there are n
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            out.append(obj)
            if len(out) == n:
                break
    out.reverse()
    return out
