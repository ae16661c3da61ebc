"""core.prefork: a `python -m` job through the server's shim behaves as the same command run by python itself
(arguments, folder, environment, streams, exit status, stop signals), and dies with its shim."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOB = """import os, signal, sys, time
print("argv", sys.argv[1:], "cwd", os.getcwd(), "X", os.environ.get("X"), "main", __name__)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "wait":
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    open("started", "w").write(str(os.getpid()))
    time.sleep(60)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("prefork")
    command = [sys.executable, "-m", "core.prefork", "serve", "--dir", str(folder), "--preload", "json"]
    server = subprocess.Popen(command, cwd=REPO)
    deadline = time.monotonic() + 60
    while not (folder / "ready").exists():
        assert server.poll() is None and time.monotonic() < deadline, "the prefork server did not start"
        time.sleep(0.1)
    yield folder / "python"
    server.terminate()
    assert server.wait(timeout=30) == 0 and not (folder / "server.sock").exists()


def _run(command: list[str], folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (folder / "job_module.py").write_text(JOB)
    return subprocess.run(command, cwd=folder, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_a_job_runs_as_python_would_run_it(shim: Path, tmp_path: Path) -> None:
    through_shim = _run([str(shim), "-m", "job_module", "3"], tmp_path, X="42")
    direct = _run([sys.executable, "-m", "job_module", "3"], tmp_path, X="42")
    assert (through_shim.returncode, through_shim.stdout, through_shim.stderr) == (3, direct.stdout, direct.stderr)
    assert direct.stdout == f"argv ['3'] cwd {tmp_path} X 42 main __main__\n"
    # Without stdin (as in CI) the job reads /dev/null, not the shim's socket.
    (tmp_path / "stdin_module.py").write_text("import os\nprint(os.readlink('/proc/self/fd/0'))\n")
    closed = subprocess.run([str(shim), "-m", "stdin_module"], cwd=tmp_path, capture_output=True, text=True,
                            preexec_fn=lambda: os.close(0), timeout=60)
    assert closed.stdout == "/dev/null\n", closed.stderr
    # Not `-m`: the shim hands the command to the real interpreter.
    assert _run([str(shim), "-c", "import sys; print(sys.prefix)"], tmp_path).stdout.strip() == sys.prefix


def _start_waiting_job(shim: Path, folder: Path) -> tuple[subprocess.Popen, int]:
    """A job that waits for a stop signal: (its shim, the pid of the server's fork running it)."""
    folder.mkdir(exist_ok=True)
    (folder / "job_module.py").write_text(JOB)
    job = subprocess.Popen([str(shim), "-m", "job_module", "wait"], cwd=folder, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (folder / "started").exists() or not (folder / "started").read_text():
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.05)
    return job, int((folder / "started").read_text())


def test_stop_signals_reach_the_job_and_a_killed_shim_takes_its_job_along(shim: Path, tmp_path: Path) -> None:
    for sig, expected in ((signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)):
        job, job_pid = _start_waiting_job(shim, tmp_path / sig.name)
        # A job started later, still running when the first ends: untouched by that end.
        bystander, bystander_pid = _start_waiting_job(shim, tmp_path / f"{sig.name}-bystander")
        assert job_pid != job.pid
        job.send_signal(sig)
        assert job.wait(timeout=30) == expected
        deadline = time.monotonic() + 10
        while Path(f"/proc/{job_pid}").exists():  # SIGKILL cannot be passed on: the server kills the orphan
            assert time.monotonic() < deadline, f"the job of a {sig.name}-ed shim still runs"
            time.sleep(0.05)
        assert bystander.poll() is None and Path(f"/proc/{bystander_pid}").exists()
        bystander.terminate()
        assert bystander.wait(timeout=30) == 128 + signal.SIGTERM


def test_the_jobs_pythonpath_comes_first_as_for_python(shim: Path, tmp_path: Path) -> None:
    """A fresh `python -m` puts its folder, then $PYTHONPATH, before the library; the fork does the same (the
    server's own folder is not on it), so a job run from another folder finds the modules its PYTHONPATH names."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "path_module.py").write_text("import sys\nprint(sys.path[:2])\n")
    (tmp_path / "elsewhere").mkdir()
    commands = ([str(shim), "-m", "path_module"], [sys.executable, "-m", "path_module"])
    through_shim, direct = (subprocess.run(command, cwd=tmp_path / "elsewhere", capture_output=True, text=True,
                                           env={**os.environ, "PYTHONPATH": str(tmp_path / "lib")}, timeout=60)
                            for command in commands)
    assert through_shim.stdout == direct.stdout == f"{[str(tmp_path / 'elsewhere'), str(tmp_path / 'lib')]}\n"
    assert "No module named path_module" in subprocess.run(commands[0], cwd=tmp_path / "elsewhere", timeout=60,
                                                           capture_output=True, text=True).stderr


def test_run_puts_the_shim_first_and_stops_the_server(tmp_path: Path) -> None:
    folder = tmp_path / "prefork"
    command = [sys.executable, "-m", "core.prefork", "run", "--dir", str(folder), "--preload", "json", "--",
               "sh", "-c", 'command -v python; echo "$DENSEBENCH_PYTHON"; exit 7']
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    shim_path = str((folder / "python").resolve())
    assert result.returncode == 7 and result.stdout.split() == [shim_path, shim_path], result.stderr
    assert not (folder / "server.sock").exists()  # the server stopped and removed its socket
