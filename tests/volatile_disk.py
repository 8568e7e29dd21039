"""A disk that loses power: a FUSE file system whose "page cache" is its own memory.

The idea of LazyFS (Ramos et al., "When Amnesia Strikes", VLDB 2024): every write lands in a buffer of
the file system process and reaches the backing folder only when the writer calls `fsync` or
`fdatasync` on that file; `power_cut` kills that process, so everything written and not yet fsync'ed is
gone, all of it, every time. Killing the *writer* (Redis) alone would not lose anything: the kernel's page
cache survives a process, which is why a `kill -9` fault test cannot tell `appendfsync always` from
`everysec`.

LazyFS itself is a C++ program that no package registry ships, so this is the same model on `mfusepy`
(maintained ctypes bindings to Debian's libfuse3). What it models, and what not:
- file data (write, truncate) is volatile until `fsync`/`fdatasync` of that file; a file created and
  never synced comes back empty;
- metadata (create, mkdir, rename, unlink) is durable at once, as LazyFS passes it through. Redis fsyncs
  its files before it renames them and then the folder, so this is the harsher side for data and no
  help to Redis;
- the backing folder is the "disk": it is never crashed itself, so it needs no fsync of its own.

`python -m tests.volatile_disk BACKING MOUNTPOINT` serves the file system in the foreground and prints
`ready` once it is mounted; tests use `VolatileDisk`.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

MOUNT_TIMEOUT_S = 20.0
REPO_ROOT = Path(__file__).resolve().parents[1]
READY = "ready"


class VolatileDiskError(RuntimeError):
    """The file system could not be mounted; the message says what is missing or what libfuse said."""


NO_DEVICE = "/dev/fuse is missing: this machine (or container) offers no FUSE device to mount with"
PACKAGE_HINT = "`make fuse` installs Debian's package fuse3 (libfuse3 and fusermount3)"


def fuse_missing() -> str | None:
    """Why no FUSE file system can be mounted here at all, or None. A missing package is not such a
    reason (`make test` installs it): `VolatileDisk.mount` raises with the hint instead."""
    return None if os.path.exists("/dev/fuse") else NO_DEVICE


def _package_missing() -> str | None:
    if shutil.which("fusermount3") is None:
        return f"fusermount3 is not installed: {PACKAGE_HINT}"
    try:
        import mfusepy  # noqa: F401 - loads libfuse3 through ctypes
    except (ImportError, OSError) as e:
        return f"mfusepy cannot load libfuse3 ({e}): {PACKAGE_HINT}"
    return None


@dataclass
class _Unsynced:
    """A file's current content while some of it is not on the backing disk yet (the page cache)."""

    data: bytearray
    dirty: bool = False


def _serve(backing: Path, mountpoint: Path) -> None:
    """Mount and serve until unmounted or killed; runs in its own process."""
    import mfusepy
    from mfusepy import FuseOSError, Operations

    class VolatileFS(Operations):  # type: ignore[misc]
        """Passes metadata through to `backing`; holds file data in memory until the file is fsync'ed."""

        use_ns = True

        def __init__(self) -> None:
            self.cache: dict[str, _Unsynced] = {}

        def _real(self, path: str) -> str:
            return str(backing) + path

        def _cached(self, path: str) -> _Unsynced:
            entry = self.cache.get(path)
            if entry is None:
                with open(self._real(path), "rb") as handle:
                    entry = self.cache[path] = _Unsynced(bytearray(handle.read()))
            return entry

        def init(self, path: str) -> None:
            print(READY, flush=True)

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            try:
                st = os.lstat(self._real(path))
            except FileNotFoundError as e:
                raise FuseOSError(errno.ENOENT) from e
            attrs = {key: getattr(st, key) for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size")}
            attrs |= {key: getattr(st, f"{key}_ns") for key in ("st_atime", "st_mtime", "st_ctime")}
            if path in self.cache:
                attrs["st_size"] = len(self.cache[path].data)
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._real(path))]

        def access(self, path: str, amode: int) -> int:
            if not os.access(self._real(path), amode):
                raise FuseOSError(errno.EACCES)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(self._real(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")
            return {key: getattr(st, key) for key in (*keys, "f_flag", "f_frsize", "f_namemax")}

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(self._real(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            os.rmdir(self._real(path))
            return 0

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._real(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(self._real(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            os.utime(self._real(path), ns=times)
            return 0

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            os.close(os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
            self.cache.pop(path, None)
            return 0

        def open(self, path: str, flags: int) -> int:
            if not os.path.exists(self._real(path)):
                raise FuseOSError(errno.ENOENT)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            if path in self.cache:
                return bytes(self.cache[path].data[offset : offset + size])
            with open(self._real(path), "rb") as handle:
                handle.seek(offset)
                return handle.read(size)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            entry = self._cached(path)
            if offset > len(entry.data):
                entry.data.extend(bytes(offset - len(entry.data)))
            entry.data[offset : offset + len(data)] = data
            entry.dirty = True
            return len(data)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            entry = self._cached(path)
            del entry.data[length:]
            entry.data.extend(bytes(length - len(entry.data)))
            entry.dirty = True
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            entry = self.cache.get(path)
            if entry is not None and entry.dirty:
                with open(self._real(path), "r+b") as handle:
                    handle.write(entry.data)
                    handle.truncate()
                entry.dirty = False
            return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            return 0  # metadata is durable at once

        def flush(self, path: str, fh: int) -> int:
            return 0  # close(2) is not fsync(2): the data stays in the cache

        def release(self, path: str, fh: int) -> int:
            return 0

        def rename(self, old: str, new: str) -> int:
            os.rename(self._real(old), self._real(new))
            self.cache.pop(new, None)
            if old in self.cache:
                self.cache[new] = self.cache.pop(old)
            return 0

        def unlink(self, path: str) -> int:
            os.unlink(self._real(path))
            self.cache.pop(path, None)
            return 0

    # One thread: the cache needs no lock. No kernel page cache of its own over ours (direct_io), so
    # every read and write reaches this process.
    mfusepy.FUSE(VolatileFS(), str(mountpoint), foreground=True, nothreads=True, direct_io=True)


class VolatileDisk:
    """The file system mounted at `mountpoint` over `backing`; `power_cut` drops what was not fsync'ed
    and mounts it again, as a machine that lost power and booted."""

    def __init__(self, backing: Path, mountpoint: Path) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.process: subprocess.Popen[str] | None = None

    @property
    def log(self) -> Path:
        return self.backing.with_name(f"{self.backing.name}.fuse.log")

    def mount(self, *, timeout_s: float = MOUNT_TIMEOUT_S) -> Self:
        reason = fuse_missing() or _package_missing()
        if reason is not None:
            raise VolatileDiskError(reason)
        self.backing.mkdir(parents=True, exist_ok=True)  # before `log`, which lives beside it
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        # stdout carries only the ready line; libfuse's and mfusepy's messages go to `log`, which nobody
        # has to drain while the file system serves.
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.volatile_disk", str(self.backing), str(self.mountpoint)],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        assert process.stdout is not None  # PIPE above
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        line = process.stdout.readline().strip() if ready else ""
        if line != READY:
            process.kill()
            process.communicate(timeout=10)
            said = self.log.read_text(errors="replace").strip()
            raise VolatileDiskError(f"mounting {self.mountpoint} failed within {timeout_s:g} s: {said}")
        self.process = process
        return self

    def power_cut(self) -> None:
        """Kill the file system process with its unsynced data, detach the dead mount, mount again.
        Stop (`kill -9`) every writer first: a process still writing would only see errors."""
        self._drop()
        self.mount()

    def unmount(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=10)  # reaps it and closes the pipe
        self.process = None
        subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=True)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
