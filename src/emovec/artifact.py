"""The artifact directory and its files: atomic writes, checksums, the manifest, and `results/<name>.json`.

An artifact is `manifest.json` + `vectors.safetensors` (written by `emovec.vectors`) and a `results/`
folder where each analysis leaves one JSON file. Every results file is stamped with the checksum of the
vectors it was computed from (`vectors_sha256`), so a reader can tell a current result from a stale one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from emovec.errors import ArtifactError, ConfigError, LockedError

MANIFEST = "manifest.json"
LOCK = ".emovec.lock"
TENSOR_FILE = "vectors.safetensors"
RESULTS_DIR = "results"


def fault_point(name: str) -> None:
    """A named step boundary where a test may kill this process (`EMOVEC_KILL_AT=name`, SIGKILL: no cleanup
    runs) to prove nothing is lost or garbled there; a no-op otherwise. `EMOVEC_KILL_RANK=r` limits it to
    the process whose RANK (set by torchrun) is r."""
    rank = os.environ.get("EMOVEC_KILL_RANK")
    if os.environ.get("EMOVEC_KILL_AT") == name and rank in (None, os.environ.get("RANK", "0")):
        os.kill(os.getpid(), signal.SIGKILL)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: object) -> str:
    """`sha256:` over the canonical JSON form of `obj` (sorted keys, no spaces)."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it (readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def finite(obj: object) -> object:
    """The same structure with NaN/inf floats turned into None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: object) -> None:
    """Write strict JSON (NaN/inf become null) atomically."""
    text = json.dumps(finite(obj), indent=1, ensure_ascii=False, allow_nan=False)
    write_bytes_atomic(Path(path), text.encode("utf-8"))


def read_json(path: Path, what: str = "file") -> object:
    """Parse a JSON file; a damaged one raises `ArtifactError` naming the file and line."""
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such {what}") from None
    except UnicodeDecodeError:
        raise ArtifactError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def read_manifest(directory: Path) -> dict[str, object]:
    """The manifest of an artifact directory, checked to be a JSON object."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise ArtifactError(f"{directory}: not an emovec artifact (no {MANIFEST})")
    manifest = read_json(path, "manifest")
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: malformed manifest (expected a JSON object)")
    return manifest


def vectors_checksum(directory: Path) -> str:
    """The recorded checksum of an artifact's tensor file (what results files are stamped with)."""
    files = read_manifest(directory).get("files")
    digest = files.get(TENSOR_FILE) if isinstance(files, dict) else None
    if not isinstance(digest, str):
        raise ArtifactError(f"{Path(directory) / MANIFEST}: malformed manifest (no checksum for {TENSOR_FILE})")
    return digest


def results_dir(directory: Path) -> Path:
    return Path(directory) / RESULTS_DIR


def result_path(directory: Path, name: str) -> Path:
    """`ARTIFACT/results/<name>.json` (`name` without the suffix)."""
    return results_dir(directory) / f"{name}.json"


def save_result(directory: Path, name: str, data: Mapping[str, object], also: Path | None = None) -> Path:
    """Write `results/<name>.json` stamped with the vectors' checksum (and a copy to `also`)."""
    stamped = {**data, "vectors_sha256": vectors_checksum(directory)}
    path = result_path(directory, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, stamped)
    fault_point("results.saved")
    if also is not None:
        write_json_atomic(Path(also), stamped)
    return path


@dataclass(frozen=True)
class StoredResult:
    """A results file as found on disk: its data, and whether it was computed from the current vectors."""

    name: str
    path: Path
    data: dict[str, object]
    stale: bool


def load_result(directory: Path, name: str) -> StoredResult | None:
    """`results/<name>.json` if present (None if not); `stale` when its vectors' checksum is not the artifact's."""
    path = result_path(directory, name)
    if not path.exists():
        return None
    data = read_json(path, "results file")
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: malformed results file (expected a JSON object)")
    return StoredResult(name, path, data, data.get("vectors_sha256") != vectors_checksum(directory))


# ---- output directories: checks before work starts, and one run at a time -----------------------------

def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_output_dir(directory: Path, param: str = "out") -> Path:
    """A directory this run may write into: not a file, and on a writable file system (checked before the
    run starts, so nothing is computed for an output that cannot be saved)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: is a file, not a directory", param=param)
    base = _existing_parent(directory)
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{directory}: cannot write here ({base} is not writable)", param=param)
    return directory


def check_output_file(path: Path, param: str = "out") -> Path:
    """A file this run may write: not a directory, its folder creatable and writable."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a file name", param=param)
    base = _existing_parent(path.parent)
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: cannot write here ({base} is not a writable directory)", param=param)
    return path


def check_free_space(directory: Path, needed: int, param: str = "out") -> None:
    """Refuse to start a run whose output would not fit on the disk."""
    free = shutil.disk_usage(_existing_parent(Path(directory))).free
    if needed > free:
        raise ConfigError(f"{directory}: the run needs about {needed / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB "
                          "is free; free some space or choose another place", param=param)


def check_new_artifact(directory: Path, overwrite: bool) -> None:
    """Refuse to replace an existing artifact unless asked to (its results would no longer match)."""
    if (Path(directory) / MANIFEST).exists() and not overwrite:
        raise ArtifactError(f"{directory}: already holds an artifact; choose another directory or overwrite it "
                            "on purpose (force)", param="force")


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold `directory`'s lock for the block: a second emovec run on the same directory is refused at once
    with the holder's PID (the OS releases the lock if this process dies)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fh = open(directory / LOCK, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise LockedError(f"{directory}: another emovec run (pid {holder}) is using this directory; wait for it "
                              "to finish or choose another directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()
