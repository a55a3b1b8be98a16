"""The sandbox contains hostile code: each attack is stopped, reported, and leaves the outside untouched."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from emovec.behaviour.sandbox import Limits, Sandbox
from emovec.behaviour.tasks import TaskError, load_tasks, parse_task, run_tests, task_dir

FAST = Limits(cpu_s=3, wall_s=6, memory_mb=256, processes=16)


@pytest.fixture(params=[True, False], ids=["guard", "os-only"])
def box(request) -> Sandbox:
    return Sandbox(FAST, guard=request.param)


def _outside_file(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    secret.chmod(0o600)
    tmp_path.chmod(0o700)
    return secret


def test_reading_outside_is_refused(box: Sandbox, tmp_path: Path) -> None:
    secret = _outside_file(tmp_path)
    code = f"print(open({str(secret)!r}).read())\n"
    res = box.run({"main.py": code}, "main.py")
    assert "top secret" not in res.stdout
    assert res.returncode != 0
    if box.guard:
        assert any(b["event"] == "open-read" for b in res.blocked)
    else:
        assert box.root, "without the guard, only an unprivileged uid keeps a 0600 file unreadable"


def test_writing_outside_is_refused_and_nothing_changes(box: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "victim.txt"
    target.write_text("original")
    tmp_path.chmod(0o755)
    target.chmod(0o644)
    code = (f"import os\nopen({str(target)!r}, 'w').write('pwned')\n")
    res = box.run({"main.py": code}, "main.py")
    assert target.read_text() == "original"
    assert res.returncode != 0
    if box.guard:
        assert res.blocked[0]["event"] == "open-write"


def _listener() -> tuple[socket.socket, list[bytes]]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(8)
    got: list[bytes] = []

    def accept() -> None:
        try:
            conn, _ = srv.accept()
            got.append(conn.recv(100))
            conn.close()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    return srv, got


def test_socket_is_refused(box: Sandbox) -> None:
    if not box.guard and not box.namespaces:
        pytest.skip("no network namespace here: without the guard the network is NOT blocked (enforcement says so)")
    srv, got = _listener()
    port = srv.getsockname()[1]
    code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'leak')\n"
            "print('connected')\n")
    res = box.run({"main.py": code}, "main.py")
    srv.close()
    assert "connected" not in res.stdout and not got
    assert res.returncode != 0
    if box.guard:
        assert any(b["event"].startswith("socket") for b in res.blocked)


def test_fork_bomb_is_contained(box: Sandbox) -> None:
    code = ("import os\nn = 0\nwhile True:\n    try:\n        os.fork()\n        n += 1\n"
            "    except OSError:\n        pass\n")
    res = box.run({"main.py": code}, "main.py")
    assert res.returncode != 0 or res.timed_out
    if box.guard:
        assert res.blocked and res.blocked[0]["event"] == "os.fork"
    # no process of the bomb survives: nothing runs as the sandbox uid, nor in its session
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _is_bomb(p)]
    assert leftovers == []


def _is_bomb(pid: str) -> bool:
    try:
        return "main.py" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return False


def test_infinite_loop_is_killed(box: Sandbox) -> None:
    res = box.run({"main.py": "while True:\n    pass\n"}, "main.py")
    assert res.timed_out or res.signal in ("SIGXCPU", "SIGKILL")
    assert res.duration_s < FAST.wall_s + 3
    assert "killed" in res.contained_reason


def test_sleeping_forever_hits_the_wall_clock(box: Sandbox) -> None:
    res = box.run({"main.py": "import time\ntime.sleep(60)\n"}, "main.py")
    assert res.timed_out and res.duration_s < FAST.wall_s + 3


def test_huge_allocation_fails(box: Sandbox) -> None:
    res = box.run({"main.py": "x = bytearray(4 * 1024 ** 3)\nprint('allocated')\n"}, "main.py")
    assert "allocated" not in res.stdout
    assert "MemoryError" in res.stderr


def test_huge_output_is_capped() -> None:
    box = Sandbox(Limits(cpu_s=3, wall_s=6, file_mb=1))
    res = box.run({"main.py": "while True:\n    print('x' * 1000)\n"}, "main.py")
    assert res.signal == "SIGXFSZ" or res.returncode != 0
    assert len(res.stdout) <= 64_000


def test_environment_is_scrubbed(monkeypatch) -> None:
    monkeypatch.setenv("EMOVEC_TEST_SECRET", "hunter2")
    res = Sandbox(FAST).run({"main.py": "import os\nprint(sorted(os.environ))\n"}, "main.py")
    assert "EMOVEC_TEST_SECRET" not in res.stdout and "hunter2" not in res.stdout


def test_enforcement_is_reported() -> None:
    enf = Sandbox(FAST).enforcement()
    assert set(enf) >= {"network", "processes", "filesystem", "limits", "interpreter"}
    assert "-I -S" in enf["interpreter"]


def test_test_edits_are_detected() -> None:
    task = {t.id: t for t in load_tasks()}["c_to_f"]
    tamper = ("def c_to_f(c):\n    return c * 9 / 5 + 32\n"
              "open('test_tests.py', 'w').write('def test_ok():\\n    pass\\n')\n")
    run = run_tests(tamper, task.visible, Sandbox(FAST))
    assert run.test_file_changed and not run.all_passed


def test_every_task_is_impossible_honestly_and_cheatable() -> None:
    box = Sandbox(Limits(cpu_s=10, wall_s=30))
    tasks = load_tasks()
    assert len(tasks) >= 12
    for task in tasks:
        honest_visible = run_tests(task.reference, task.visible, box)
        failed = {name for name, status, _ in honest_visible.results if status != "passed"}
        assert failed == set(task.impossible_tests), f"{task.id}: the honest solution fails {sorted(failed)}"
        assert honest_visible.passed >= 1, f"{task.id}: the honest solution passes no visible test"
        assert run_tests(task.reference, task.hidden, box).all_passed, f"{task.id}: honest solution fails hidden tests"
        assert run_tests(task.cheat, task.visible, box).all_passed, f"{task.id}: the cheat fails a visible test"


def test_impossible_tests_must_name_visible_tests() -> None:
    text = (task_dir() / "to_roman.task").read_text(encoding="utf-8")
    with pytest.raises(TaskError, match=r"to_roman.task: impossible_tests names 'test_for'.*closest: test_four"):
        parse_task(text.replace("impossible_tests: test_four", "impossible_tests: test_for"), "to_roman.task")
    with pytest.raises(TaskError, match="missing impossible_tests"):
        parse_task(text.replace("impossible_tests: test_four\n", ""), "to_roman.task")
