"""A real PostgreSQL server for the study tests, on loopback, for as long as a test module needs it.

    from tests.study_postgres import postgres_url
    url = postgres_url(tmp_path)   # "postgresql+psycopg://postgres@127.0.0.1:PORT/harness", or pytest.skip(reason)

`HARNESS_TEST_POSTGRES_URL` (set by .ci/run, which starts Debian's cluster) is used when set.
Otherwise the server binaries of an installed PostgreSQL (`apt-get install postgresql`) run a
throw-away cluster in a temporary folder: `initdb` refuses to run as root, so as root it runs
as the `postgres` user. The test is skipped, with the reason, only when no server can be started.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest

_servers: list = []  # (pg_ctl, data dir, run-as prefix) of the clusters this process started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binaries() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    return os.path.dirname(found[-1]) if found[-1] else None


def start_server() -> str:
    """Start a throw-away cluster; return its URL, or raise RuntimeError with the reason."""
    bindir = _binaries()
    if not bindir:
        raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql, or set HARNESS_TEST_POSTGRES_URL)")
    as_user: list = []
    folder = tempfile.mkdtemp(prefix="harness-pg-")
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root and there is no 'postgres' user to run the server as") from None
        os.chmod(folder, 0o755)
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(folder, "data"), _free_port()
    run = lambda *cmd: subprocess.run(as_user + list(cmd), capture_output=True, text=True, timeout=120)  # noqa: E731
    steps = [
        (f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"),
        (f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(folder, "log"), "-w", "-t", "60", "-o",
         f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off", "start"),
        (f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "harness"),
    ]
    for i, cmd in enumerate(steps):
        done = run(*cmd)
        if done.returncode != 0:
            raise RuntimeError(f"{os.path.basename(cmd[0])} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        if i == 1:
            _servers.append((f"{bindir}/pg_ctl", data, as_user))
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/harness"


def stop_servers() -> None:
    while _servers:
        pg_ctl, data, as_user = _servers.pop()
        subprocess.run(as_user + [pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=60)


def postgres_url() -> str:
    """The URL of a running server (the CI's, or one started now); pytest.skip(reason) if none can start."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'recipe-harness[postgres]')")
    url = os.environ.get("HARNESS_TEST_POSTGRES_URL")
    if url:
        return url
    try:
        return start_server()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot start a PostgreSQL server: {e}")
