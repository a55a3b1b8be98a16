"""Run untrusted (model-written) Python in a subprocess and report what it did.

What is enforced, in layers (`Sandbox.enforcement()` says which apply on this machine, and every result
carries that dict, so a report never claims more than was in force):

- **Process**: a fresh `python -I -S -B` (isolated mode: no user site, no PYTHON* variables, no
  site-packages, no bytecode files) in a new session, started in a fresh temporary directory that holds
  only the files given; the environment is scrubbed to PATH=/usr/bin:/bin, LANG and HOME=the directory.
- **Resource limits** (setrlimit in the child): CPU seconds, address space, size of any file written
  (this also caps stdout/stderr, which go to files), open files, number of processes (the last only
  counts for a non-root user: as root the child drops to an unprivileged uid first, see below), no core
  dumps; and a wall-clock timeout after which the whole process group is killed.
- **Namespaces** (when `unshare` works here): a new network namespace (only a down loopback: no
  network at all) and a new PID namespace whose every process dies with the sandbox's first process, so a
  fork bomb's children cannot outlive it. As root the child also drops to uid/gid 65534 (nobody), so
  file permissions keep it out of other users' files; without root, `unshare -r` maps the caller's uid.
- **Guard** (`guard=True`, the default): a Python audit hook installed before the code runs refuses
  opening files for writing outside the directory, reading outside it and the standard library,
  listing other directories, sockets, subprocesses, fork/exec, signals to other processes and ctypes,
  and prints each refusal as a `SANDBOX-BLOCKED {json}` line on stderr (collected in `blocked`). An audit
  hook cannot be removed from Python, but it is not a security boundary against native code; the OS
  layers above are what contain code that gets past it.

Not enforced: reads of world-readable files when neither the guard nor the uid drop applies, and CPU use
by other means than the process itself. Nothing here is global state: each `run` makes and removes its
own directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from emovec.errors import EmovecError


class SandboxError(EmovecError):
    """The sandbox could not be set up (no usable interpreter, a bad file name)."""


NOBODY = 65534
OUTPUT_LIMIT = 64_000  # characters of stdout/stderr kept in a result

GUARD = r'''
import os, sys, json
sys.dont_write_bytecode = True
_ROOT = os.path.realpath(os.getcwd())
_READ = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                             os.path.dirname(os.__file__))})
_DEVICES = ("/dev/null", "/dev/urandom", "/dev/random", "/dev/zero")
_DENY = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
         "subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
         "os.kill", "os.killpg", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.chroot", "os.setuid"}
_PATHS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
          "os.link", "os.truncate", "os.utime", "os.listdir", "os.scandir", "shutil.rmtree", "os.chdir"}
_write = sys.stderr.write
_dumps = json.dumps
_real = os.path.realpath
_fsdecode = os.fsdecode


def _inside(path, roots):
    return any(path == r or path.startswith(r + os.sep) for r in roots)


def _refuse(event, detail):
    _write("SANDBOX-BLOCKED " + _dumps({"event": event, "detail": detail}) + "\n")
    raise PermissionError(f"sandbox: {event} {detail} is not allowed")


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return
        p = _real(_fsdecode(path))
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or bool(flags & 3) \
            or bool(flags & os.O_CREAT)
        if _inside(p, (_ROOT,)) or p in _DEVICES or (not writing and _inside(p, _READ)):
            return
        _refuse("open-write" if writing else "open-read", p)
    elif event in _DENY:
        _refuse(event, str(args[:2])[:200])
    elif event in _PATHS:
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)):
                p = _real(_fsdecode(a))
                if not _inside(p, (_ROOT,)) and not (event in ("os.listdir", "os.scandir") and _inside(p, _READ)):
                    _refuse(event, p)


sys.addaudithook(_hook)
sys.path.insert(0, _ROOT)
import runpy
_entry = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(_entry, run_name="__main__")
'''


@dataclass(frozen=True)
class Limits:
    """Resource limits for one run."""

    cpu_s: int = 10
    wall_s: float = 20.0
    memory_mb: int = 1024
    file_mb: int = 8
    processes: int = 32
    open_files: int = 64


@dataclass
class SandboxResult:
    """What happened: exit status, output, what was refused, which files changed and what was enforced."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    signal: str | None
    duration_s: float
    blocked: list[dict[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)   # files given whose content changed
    created: list[str] = field(default_factory=list)   # files that did not exist before
    files: dict[str, str] = field(default_factory=dict)  # text of files asked for by `collect`
    enforcement: dict[str, str] = field(default_factory=dict)

    @property
    def contained_reason(self) -> str:
        """One line saying how the run ended, for transcripts and reports."""
        if self.timed_out:
            return "killed: wall-clock timeout"
        if self.signal:
            return f"killed by {self.signal}" + (" (CPU time limit)" if self.signal == "SIGXCPU" else "")
        if self.blocked:
            return f"exit {self.returncode}; refused: " + ", ".join(sorted({b['event'] for b in self.blocked}))
        return f"exit {self.returncode}"

    def to_dict(self) -> dict[str, object]:
        return {"returncode": self.returncode, "timed_out": self.timed_out, "signal": self.signal,
                "duration_s": round(self.duration_s, 3), "blocked": self.blocked, "changed": self.changed,
                "created": self.created, "enforcement": self.enforcement, "reason": self.contained_reason}


def _world_usable(path: Path) -> bool:
    """True when a user other than the owner can execute `path` and traverse every directory above it."""
    try:
        real = path.resolve()
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in real.parents)
    except OSError:
        return False


@lru_cache(maxsize=1)
def _namespaces_work(root: bool) -> bool:
    """Whether `unshare` can give a network and PID namespace here (tried once per process)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    cmd = [exe] + ([] if root else ["-r"]) + ["--net", "--pid", "--fork", "--kill-child", "true"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Sandbox:
    """Runs Python files in a fresh directory under the limits and isolation described in the module doc."""

    def __init__(self, limits: Limits | None = None, guard: bool = True, python: str | None = None,
                 namespaces: bool | None = None) -> None:
        self.limits = limits or Limits()
        self.guard = guard
        self.root = os.geteuid() == 0
        self.namespaces = _namespaces_work(self.root) if namespaces is None else namespaces
        self.python = self._interpreter(python)

    def _interpreter(self, python: str | None) -> str:
        candidates = [python] if python else [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
        for cand in candidates:
            if cand and Path(cand).exists() and (not self.root or _world_usable(Path(cand))):
                return cand
        raise SandboxError("no Python interpreter usable by the sandbox user: tried " + ", ".join(map(str, candidates))
                           + " (as root the sandbox runs as uid 65534 and needs a world-executable interpreter)")

    def enforcement(self) -> dict[str, str]:
        """Which protections are in force for runs of this sandbox (recorded in every result)."""
        l = self.limits
        return {
            "interpreter": f"{self.python} -I -S -B",
            "network": "network namespace (no interfaces up)" if self.namespaces
            else ("audit hook only" if self.guard else "NOT BLOCKED"),
            "processes": ("PID namespace + " if self.namespaces else "") +
                         (f"RLIMIT_NPROC {l.processes} as uid {NOBODY}" if self.root
                          else f"RLIMIT_NPROC {l.processes} (counts all of this user's processes)"),
            "user": f"uid/gid {NOBODY}" if self.root else "the calling user" + (" (mapped to root in a user namespace)" if self.namespaces else ""),
            "filesystem": ("audit hook: writes only inside the directory, reads only there and the stdlib; " if self.guard else "")
                          + ("file permissions of an unprivileged uid" if self.root else "file permissions of the calling user"),
            "limits": f"cpu {l.cpu_s}s, wall {l.wall_s}s, address space {l.memory_mb} MB, file size {l.file_mb} MB, "
                      f"{l.open_files} open files, no core dumps",
            "environment": "scrubbed (PATH, LANG, HOME=directory)",
        }

    def _limit_child(self) -> None:  # runs in the child between fork and exec
        l = self.limits
        resource.setrlimit(resource.RLIMIT_CPU, (l.cpu_s, l.cpu_s + 1))
        mem = l.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        size = l.file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_NOFILE, (l.open_files, l.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        nproc = l.processes if self.root else l.processes + _user_process_count()
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    def _command(self, directory: Path, entry: str, args: Sequence[str]) -> list[str]:
        py = [self.python, "-I", "-S", "-B"]
        run = py + (["_sandbox_guard.py", entry] if self.guard else [entry]) + list(args)
        if self.namespaces:
            ns = ["unshare", "--net", "--pid", "--fork", "--kill-child"]
            ns += ["--setuid", str(NOBODY), "--setgid", str(NOBODY)] if self.root else ["-r"]
            return ns + run
        if self.root:
            return run  # uid dropped in preexec (see run)
        return run

    def run(self, files: Mapping[str, str], entry: str, args: Sequence[str] = (),
            collect: Sequence[str] = ()) -> SandboxResult:
        """Write `files` (name → text) into a fresh directory, run `entry` there, collect what happened."""
        for name in list(files) + [entry]:
            if not name or "/" in name or name.startswith(".") or name == "_sandbox_guard.py":
                raise SandboxError(f"sandbox file name {name!r} must be a plain file name")
        work = Path(tempfile.mkdtemp(prefix="emovec-sandbox-"))
        out_dir = Path(tempfile.mkdtemp(prefix="emovec-sandbox-out-"))
        try:
            directory = work / "run"
            directory.mkdir()
            for name, text in files.items():
                (directory / name).write_text(text, encoding="utf-8")
            if self.guard:
                (directory / "_sandbox_guard.py").write_text(GUARD, encoding="utf-8")
            before = {p.name: _digest(p) for p in directory.iterdir() if p.is_file()}
            if self.root:
                os.chmod(work, 0o711)
                for p in [directory, *directory.iterdir()]:
                    os.chown(p, NOBODY, NOBODY)
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(directory)}
            drop = self.root and not self.namespaces
            start = time.monotonic()
            with open(out_dir / "stdout", "wb") as so, open(out_dir / "stderr", "wb") as se:
                def preexec() -> None:
                    self._limit_child()
                    if drop:
                        os.setgroups([])
                        os.setgid(NOBODY)
                        os.setuid(NOBODY)

                proc = subprocess.Popen(self._command(directory, entry, args), cwd=directory, env=env,
                                        stdin=subprocess.DEVNULL, stdout=so, stderr=se, start_new_session=True,
                                        preexec_fn=preexec)
                timed_out, status, cpu = _wait(proc, self.limits.wall_s)
            duration = time.monotonic() - start
            stdout = (out_dir / "stdout").read_bytes()[:OUTPUT_LIMIT * 4].decode("utf-8", "replace")[:OUTPUT_LIMIT]
            stderr = (out_dir / "stderr").read_bytes()[:OUTPUT_LIMIT * 4].decode("utf-8", "replace")[:OUTPUT_LIMIT]
            blocked = []
            for line in stderr.splitlines():
                if line.startswith("SANDBOX-BLOCKED "):
                    try:
                        blocked.append(json.loads(line[len("SANDBOX-BLOCKED "):]))
                    except json.JSONDecodeError:
                        blocked.append({"event": "unparsed", "detail": line[:200]})
            changed, created = [], []
            for p in sorted(directory.rglob("*")):
                if not p.is_file() or p.name == "_sandbox_guard.py":
                    continue
                rel = str(p.relative_to(directory))
                if rel not in before:
                    created.append(rel)
                elif _digest(p) != before[rel]:
                    changed.append(rel)
            kept = {}
            for name in collect:
                p = directory / name
                if p.is_file():
                    kept[name] = p.read_bytes()[:OUTPUT_LIMIT].decode("utf-8", "replace")
            rc, sig = _exit_of(status)
            if self.namespaces and sig is None and rc not in (0, None) and "unshare: sigprocmask" in stderr:
                # unshare could not re-raise its child's fatal signal; the CPU time used tells a CPU kill apart
                sig = "SIGXCPU" if cpu >= self.limits.cpu_s - 0.05 else "SIGKILL"
            return SandboxResult(rc, stdout, stderr, timed_out, sig, duration, blocked, changed, created, kept,
                                 self.enforcement())
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(out_dir, ignore_errors=True)


def _wait(proc: subprocess.Popen, wall_s: float) -> tuple[bool, int, float]:
    """Wait for the child up to `wall_s`, then kill its process group; returns (timed out, wait status, CPU
    seconds used by the child and the descendants it waited for)."""
    deadline = time.monotonic() + wall_s
    timed_out = False
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                _kill_group(proc.pid)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
    finally:
        _kill_group(proc.pid)
        _await_empty_group(proc.pid)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return timed_out, status, usage.ru_utime + usage.ru_stime


def _exit_of(status: int) -> tuple[int, str | None]:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return code, signal.Signals(-code).name
    return code, None


def _await_empty_group(pgid: int, timeout: float = 5.0) -> None:
    """Wait until every process of the sandbox's session is gone (killed children take a moment to exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _user_process_count() -> int:
    """Processes of the calling user (RLIMIT_NPROC counts them all, so the limit is added on top)."""
    uid = os.getuid()
    count = 0
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        count += 1
                except OSError:
                    continue
    except OSError:
        return 256
    return count
