"""Start `python -m <module>` jobs from a process that has already imported the heavy libraries.

A job of the local demo spends ~6.5 s importing torch and torchvision before it does anything (torchvision
imports torch._dynamo); the smoke DAG runs ~110 such jobs on 2 cores. `make demo` therefore starts this
server, which imports them once, and puts a `python` shim first on the jobs' PATH: `python -m X ARGS`
becomes a fork of the server that runs module X as `__main__` with the job's arguments, working folder,
environment and standard streams, and the shim exits with its status (a stop signal sent to the shim is
passed on). Anything else the shim runs with the real interpreter. The jobs run the same code; only the
imports are shared. Cluster profiles start every job as a fresh process.

    python -m core.prefork serve --dir DIR [--preload MODULE ...]   # DIR/python: the shim; DIR/ready when up
    python -m core.prefork run --dir DIR [--preload ...] -- COMMAND  # COMMAND with the shim first on PATH
                                                                     # (and in $DENSEBENCH_PYTHON), then stop

Only the standard library is imported before the preloads: the shim and the server share this file.
"""

from __future__ import annotations

import argparse
import array
import atexit
import contextlib
import importlib
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

SOCKET = "server.sock"
READY = "ready"
SHIM_ENV = "DENSEBENCH_PYTHON"  # the shim's path, for commands that start `python` by path (the tests)
# torch + torchvision are ~6.5 s of every job's start; pandas and matplotlib ~1 s of the table jobs'.
DEFAULT_PRELOAD = ("torch", "torchvision", "pandas", "matplotlib.figure")
_SHIM = """#!{python} -IS
# Written by `python -m core.prefork serve`: `python -m MODULE ...` runs in a fork of the server.
import importlib.util
# Loaded by path: core/ on sys.path would shadow the standard library's io with core/io.py.
spec = importlib.util.spec_from_file_location("prefork", {module!r})
prefork = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prefork)
prefork.shim({python!r}, {socket!r})
"""
_MAX_FDS = 3
_MAX_SOCKET_PATH = 100


def _send_fds(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    """One request: a JSON object (argv, cwd, env) ending in a newline, with the standard streams' fds."""
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, ancillary, _, _ = conn.recvmsg(1 << 20, socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize))
        if not chunk:
            raise ConnectionError("the shim closed the connection before its request")
        data += chunk
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += array.array("i", raw[: len(raw) - len(raw) % array.array("i").itemsize]).tolist()
    return json.loads(data), fds


def shim(python: str, socket_path: str) -> None:
    """The `python` of the jobs: `-m MODULE ...` through the server, anything else by the real interpreter."""
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "-m" or not os.path.exists(socket_path):
        os.execv(python, [python, *argv])
    for fd in range(_MAX_FDS):  # a closed standard stream (CI runs without stdin) opens on /dev/null: not the socket
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
    except OSError:  # the server is gone: run the job as a fresh process
        os.execv(python, [python, *argv])
    request = {"argv": argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}
    _send_fds(sock, json.dumps(request).encode() + b"\n", [0, 1, 2])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, lambda number, _frame: sock.sendall(f"signal {number}\n".encode()))
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            sys.exit("prefork: the server stopped before the job ended")
        reply += chunk
    status = int(reply.split()[-1])
    if status < 0:  # killed by a signal: end the same way, as the shell expects of the job's process
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    sys.exit(status)


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed by the job (json.tool closes stdout), broken pipe
            stream.flush()


def _pythonpath(env: dict[str, str]) -> list[str]:
    return [os.path.abspath(entry) for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]


def _run_child(request: dict, fds: list[int], base_path: list[str]) -> None:
    """In the fork: become the job (`python -m MODULE ARGS` in its folder, environment and streams); never
    returns into the server's loop."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        _flush_streams()
        for target, fd in enumerate(fds[:_MAX_FDS]):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # What `python -m` puts first: the working folder, then the job's PYTHONPATH, then the library.
        sys.path[:] = [request["cwd"], *_pythonpath(request["env"]), *base_path]
        module, *args = request["argv"]
        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if not isinstance(stop.code, int | None):
                print(stop.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001  (the job's uncaught error: its traceback, status 1, as python does)
            import traceback

            traceback.print_exc()
        atexit._run_exitfuncs()  # what interpreter shutdown runs (logging.shutdown flushes file handlers)
    finally:
        _flush_streams()
        os._exit(code)


def write_shim(folder: Path) -> str:
    """Write the shim into `folder` (before the server listens: until then it runs jobs by the real interpreter);
    return the socket path it connects to."""
    folder.mkdir(parents=True, exist_ok=True)
    socket_path = str(folder.resolve() / SOCKET)
    if len(socket_path) > _MAX_SOCKET_PATH:  # AF_UNIX paths are limited to 107 bytes
        socket_path = str(Path(tempfile.mkdtemp(prefix="prefork-")) / SOCKET)
    Path(socket_path).unlink(missing_ok=True)
    shim_path = folder / "python"
    shim_path.write_text(_SHIM.format(python=sys.executable, module=str(Path(__file__).resolve()), socket=socket_path))
    shim_path.chmod(0o755)
    return socket_path


def serve(folder: Path, preload: list[str], socket_path: str | None = None) -> None:
    """Write the shim (unless `socket_path` says it is written), import `preload`, listen on the socket, then fork
    one child per request."""
    own = {sys.path[0], *_pythonpath(dict(os.environ))}
    base_path = [entry for entry in sys.path[1:] if entry not in own]  # the library part of sys.path
    socket_path = socket_path or write_shim(folder)
    for module in preload:
        importlib.import_module(module)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(64)
    (folder / READY).write_text(f"{os.getpid()}\n")
    children: dict[int, socket.socket] = {}
    stop = False

    def _stop(_number: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop or children:
        if stop and children:
            for pid in children:
                _kill(pid, signal.SIGTERM)
        readable, _, _ = select.select([server, *children.values()], [], [], 0.05)
        for conn in readable:
            if conn is server:
                client, _ = server.accept()
                try:
                    request, fds = _recv_request(client)
                except (ConnectionError, ValueError):
                    client.close()
                    continue
                pid = os.fork()
                if pid == 0:  # the job holds none of the server's sockets
                    for sock in (server, client, *children.values()):
                        sock.close()
                    _run_child(request, fds, base_path)
                for fd in fds:
                    os.close(fd)
                children[pid] = client
            else:  # a shim: a signal to pass on, or gone (killed): its job must not outlive it
                pid = next(p for p, c in children.items() if c is conn)
                message = conn.recv(64)
                number = int(message.split()[-1]) if message.startswith(b"signal") else signal.SIGKILL
                _kill(pid, number)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                with contextlib.suppress(OSError):  # the shim is gone
                    conn.sendall(f"status {code}\n".encode())
                conn.close()
    server.close()
    Path(socket_path).unlink(missing_ok=True)


def _kill(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)


def run(folder: Path, preload: list[str], command: list[str]) -> int:
    """Start the server on `folder`, run `command` with the shim first on PATH and in $DENSEBENCH_PYTHON, stop
    the server; the command's exit status. The server's output goes to `folder`.log.

    The command starts at once: while the server imports its preloads (~8 s), the shim runs jobs by the real
    interpreter, which is what they would cost without the server; from then on they are forks."""
    if not command:
        raise SystemExit("prefork run: name the command after --")
    (folder / READY).unlink(missing_ok=True)
    socket_path = write_shim(folder)
    log_path = folder.with_name(folder.name + ".log")
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "core.prefork", "serve", "--dir", str(folder),
                                   "--socket", socket_path, "--preload", *preload], stdout=log,
                                  stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    try:
        shim_path = str((folder / "python").resolve())
        env = {**os.environ, "PATH": f"{Path(shim_path).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               SHIM_ENV: shim_path}
        return subprocess.run(command, env=env).returncode
    finally:
        if server.poll() is not None:  # it failed: the jobs ran as fresh processes
            print(f"prefork: the server stopped early; jobs ran without it:\n{log_path.read_text()}",
                  file=sys.stderr)
        server.terminate()
        server.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.prefork", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="import the preloads, then start `python -m` jobs as forks")
    p.add_argument("--dir", type=Path, required=True, help="folder of the shim (DIR/python), socket and ready file")
    p.add_argument("--preload", nargs="*", default=list(DEFAULT_PRELOAD), help="modules to import once")
    p.add_argument("--socket", help="the socket of a shim already written (by `run`)")
    p = commands.add_parser("run", help="run a command whose `python -m` jobs start as forks, then stop the server")
    p.add_argument("--dir", type=Path, required=True, help="folder of the shim, socket and ready file")
    p.add_argument("--preload", nargs="*", default=list(DEFAULT_PRELOAD), help="modules to import once")
    p.add_argument("job", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command and its arguments")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.dir, args.preload, args.socket)
    else:
        sys.exit(run(args.dir, args.preload, args.job[1:] if args.job[:1] == ["--"] else args.job))


if __name__ == "__main__":
    main()
