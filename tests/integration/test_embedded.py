"""The embedded PostgreSQL (store.embedded) on real servers, each in a temporary folder.

What the security review asked for: the server listens only on a Unix socket in a private
folder (no TCP), other users cannot reach it, and nothing outside its folder has its
permissions changed; plus one server per folder, reused, and started once under a race.

Run as root (as here), the server runs as the system user topic-sync-pg, and the normal-user
path is exercised in a forked child that became `nobody`. Run as a normal user, the tests
exercise the normal-user path directly; the checks that need a second user (`nobody` cannot
reach the socket) then rest on the folder modes they assert.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from topic_sync.store import db, embedded
from topic_sync.store.embedded import EmbeddedError, EmbeddedServer, default_base

AS_ROOT = os.geteuid() == 0
NOBODY = pwd.getpwnam("nobody")


def _server_uid() -> int:
    return pwd.getpwnam(embedded.SYSTEM_USER).pw_uid if AS_ROOT else os.geteuid()


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    """A short folder under /tmp (socket paths are limited), traversable by every user like
    /var/lib is: the server's user must reach the base inside it without a chmod of ours."""
    tmp = Path(tempfile.mkdtemp(prefix="ts-emb-", dir="/tmp"))
    tmp.chmod(0o755)
    yield tmp
    shutil.rmtree(tmp)


@pytest.fixture
def base(tmp_dir: Path) -> Iterator[Path]:
    base = tmp_dir / "base"
    yield base
    EmbeddedServer(base).stop()


def _owners_and_modes(paths: list[Path]) -> dict[Path, tuple[int, int, int]]:
    found = {}
    for path in paths:
        info = path.stat()
        found[path] = (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode))
    return found


def _outside(base: Path) -> list[Path]:
    """Folders the old pgserver code loosened: those above the data and the wheel's."""
    wheel_bin = embedded._wheel_bin()
    site = wheel_bin.parents[2]
    wheel = [wheel_bin, wheel_bin.parent / "lib", wheel_bin.parent / "share", *wheel_bin.parents]
    return [*base.parents, *wheel, site / "pgserver.libs", Path.home()]


def _tcp_listeners(pid: int) -> set[int]:
    """Inodes of the TCP sockets in LISTEN state that process pid holds."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            held.add(int(target[len("socket:[") : -1]))
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                listening.add(int(fields[9]))
    return held & listening


def _as_user(user: pwd.struct_passwd, work: Callable[[], Any]) -> Any:
    """Run work() in a forked child that became `user` (no supplementary groups); its result
    (JSON) or its error comes back through a pipe. The child runs code already imported, so
    the user needs no access to this interpreter's files."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            answer = {"result": work()}
        except BaseException as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        with os.fdopen(write_end, "w") as out:
            json.dump(answer, out)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as returned:
        answer = json.loads(returned.read() or '{"error": "the child said nothing"}')
    os.waitpid(child, 0)
    if "error" in answer:
        raise AssertionError(f"as {user.pw_name}: {answer['error']}")
    return answer["result"]


def _listing_error(folder: Path) -> str:
    try:
        os.listdir(folder)
    except OSError as error:
        return str(error)
    return "listed"


def _connect_error(url: str) -> str:
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        return str(error)
    return "connected"


def test_server_listens_only_on_a_private_socket_and_touches_nothing_outside(base: Path) -> None:
    outside = _outside(base)
    before = _owners_and_modes(outside)
    server = EmbeddedServer(base)

    url = server.url()

    assert _owners_and_modes(outside) == before
    uid = _server_uid()
    run, pgdata = base / "run", base / "pgdata"
    assert (stat.S_IMODE(run.stat().st_mode), run.stat().st_uid) == (0o700, uid)
    assert (stat.S_IMODE(pgdata.stat().st_mode), pgdata.stat().st_uid) == (0o700, uid)
    assert stat.S_ISSOCK((run / ".s.PGSQL.5432").stat().st_mode)
    if AS_ROOT:  # root's and the server user's group's only; binaries copied in
        assert (base.stat().st_uid, stat.S_IMODE(base.stat().st_mode)) == (0, 0o710)
        assert (base / "pginstall").is_dir()
    else:
        assert stat.S_IMODE(base.stat().st_mode) == 0o700
    pid = server.pid()
    assert pid is not None
    assert Path(f"/proc/{pid}").stat().st_uid == uid
    assert _tcp_listeners(pid) == set()
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.execute("SHOW unix_socket_directories").fetchone() == (str(run),)
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    engine = db.make_engine(url)  # the way topic-sync connects (SQLAlchemy, psycopg)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT 1 + 1")) == 2
    engine.dispose()

    again = EmbeddedServer(base)
    assert again.url() == url
    assert again.pid() == pid

    if AS_ROOT:
        looked = _as_user(NOBODY, lambda: _listing_error(run))
        assert "Permission denied" in looked, looked
        refused = _as_user(NOBODY, lambda: _connect_error(url))
        assert "Permission denied" in refused, refused

    server.stop()
    assert server.pid() is None
    assert not embedded._is_alive(pid)
    assert "connected" not in _connect_error(url)
    server.stop()  # stopping a stopped server is fine


def test_a_stale_pid_file_does_not_block_a_start(base: Path) -> None:
    server = EmbeddedServer(base)
    server.url()
    server.stop()
    # After a reboot the pid in postmaster.pid may belong to an unrelated live process.
    stale = f"{os.getpid()}\n{base / 'pgdata'}\n0\n5432\n{base / 'run'}\n\n0 0\nready\n"
    (base / "pgdata" / "postmaster.pid").write_text(stale)
    (base / "run" / ".s.PGSQL.5432.lock").write_text(f"{os.getpid()}\n")

    url = server.url()

    assert server.pid() not in (None, os.getpid())
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_concurrent_starts_share_one_server(base: Path) -> None:
    start = threading.Barrier(3)
    urls: list[str] = []
    pids: set[int | None] = set()

    def start_one() -> None:
        start.wait()
        server = EmbeddedServer(base)
        urls.append(server.url())
        pids.add(server.pid())

    threads = [threading.Thread(target=start_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(urls) == 3 and len(set(urls)) == 1
    assert len(pids) == 1 and None not in pids
    assert (base / "server.log").read_text().count("starting PostgreSQL") == 1
    assert not (base / "pgdata.init").exists()


def test_a_normal_user_runs_the_server_as_itself(tmp_dir: Path) -> None:
    user = NOBODY if AS_ROOT else pwd.getpwuid(os.geteuid())
    home = tmp_dir / "home"
    home.mkdir()
    if AS_ROOT:
        os.chown(home, user.pw_uid, user.pw_gid)
    base = default_base({"HOME": str(home)}, user.pw_uid)
    assert base == home / ".local" / "share" / "topic-sync" / "embedded"

    def start() -> dict[str, Any]:
        server = EmbeddedServer(base)
        url = server.url()
        with psycopg.connect(url) as conn:
            (listen,) = conn.execute("SHOW listen_addresses").fetchone() or ("?",)
        return {"url": url, "pid": server.pid(), "listen": listen}

    def stop() -> None:
        EmbeddedServer(base).stop()

    if AS_ROOT:
        # The user runs the PostgreSQL binaries in this virtualenv: a checkout inside a folder
        # only its owner may enter (mktemp -d makes them 0700) cannot pass this test.
        closed = [
            folder
            for folder in Path(sys.prefix).resolve().parents
            if not folder.stat().st_mode & stat.S_IXOTH
        ]
        assert not closed, f"{user.pw_name} cannot enter {closed[0]}: test from an open folder"
    started = _as_user(user, start) if AS_ROOT else start()
    try:
        assert started["listen"] == ""
        assert Path(f"/proc/{started['pid']}").stat().st_uid == user.pw_uid
        for folder in (base, base / "run", base / "pgdata"):
            info = folder.stat()
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user.pw_uid, 0o700), folder
        assert not (base / "pginstall").exists()  # the wheel's binaries, in place
        assert _tcp_listeners(started["pid"]) == set()
    finally:
        _as_user(user, stop) if AS_ROOT else stop()
    assert not embedded._is_alive(started["pid"])


def test_default_base() -> None:
    assert default_base({"XDG_DATA_HOME": "/x/data", "HOME": "/h"}, 1000) == Path(
        "/x/data/topic-sync/embedded"
    )
    assert default_base({"HOME": "/h"}, 1000) == Path("/h/.local/share/topic-sync/embedded")
    relative = {"XDG_DATA_HOME": "data", "HOME": "/h"}  # the XDG spec: ignore relative values
    assert default_base(relative, 1000) == Path("/h/.local/share/topic-sync/embedded")
    # Root's home is private: root uses a folder the server's user can reach.
    assert default_base({"HOME": "/root", "XDG_DATA_HOME": "/root/d"}, 0) == Path(
        "/var/lib/topic-sync/embedded"
    )


def test_paths_the_server_cannot_use_are_refused(tmp_dir: Path) -> None:
    with pytest.raises(EmbeddedError, match="too long"):
        EmbeddedServer(tmp_dir / ("x" * 100))
    with pytest.raises(EmbeddedError, match="shell"):
        EmbeddedServer(tmp_dir / 'a"b')
    assert not list(tmp_dir.iterdir())  # refused before creating anything
