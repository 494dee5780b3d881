"""The embedded PostgreSQL for trying topic-sync without a database server.

It runs the PostgreSQL binaries the `pgserver` wheel ships, but not pgserver's own server
management: run as root, that loosens the permissions of every folder above its data
directory and of the wheel, and with a long data path it puts its socket in a world-writable
runtime folder; with trust authentication any local user was then a superuser. Here the
server listens only on a Unix socket in a folder of its own (mode 0700, owned by the server's
user), never on TCP, and nothing outside `base` has its permissions changed.

Layout of `base`: `pgdata/` (the cluster, 0700), `run/` (the socket, 0700), `server.log`,
`.lock` (serialises starting and stopping) and, as root only, `pginstall/` (a copy of the
binaries the unprivileged server user can read without access to the virtualenv). A normal
user's `base` is 0700; root's is root's with mode 0710 for the server user's group.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from topic_sync.errors import DatabaseUnavailable

# PostgreSQL refuses to run as root; as root the server runs as this system user.
SYSTEM_USER = "topic-sync-pg"
SUPERUSER = "postgres"
# With no TCP listener the port only names the socket file (.s.PGSQL.5432).
PORT = 5432
START_TIMEOUT_SECONDS = 60
# sun_path holds 108 bytes, its terminating NUL included (Linux; macOS has 104).
SOCKET_PATH_MAX = 103
# pg_ctl hands the data directory and log path to /bin/sh inside double quotes.
_SHELL_UNSAFE = frozenset('"$`\\\n')
# The binaries' environment: nothing of ours (credentials, DATABASE_URL) leaks into the server.
_CHILD_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


class EmbeddedError(DatabaseUnavailable):
    """The embedded PostgreSQL could not be prepared or started."""


def default_base(environ: Mapping[str, str], euid: int) -> Path:
    """Where the embedded server lives.

    A normal user's per-user data folder (XDG). Root's home is private (0700) and the
    unprivileged server user must reach `base` without any permission being loosened, so root
    uses /var/lib, whose parents everyone may traverse.
    """
    if euid == 0:
        return Path("/var/lib/topic-sync/embedded")
    data_home = environ.get("XDG_DATA_HOME", "")
    if not Path(data_home).is_absolute():  # the XDG spec: a relative value is ignored
        home = environ.get("HOME") or pwd.getpwuid(euid).pw_dir
        data_home = str(Path(home) / ".local" / "share")
    return Path(data_home) / "topic-sync" / "embedded"


@dataclass(frozen=True)
class _Owner:
    """The server's system user: the one initdb, pg_ctl and postgres run as."""

    uid: int
    gid: int
    name: str


@dataclass(frozen=True)
class _PidFile:
    """What postmaster.pid says about a running server (its first eight lines)."""

    pid: int
    socket_dir: str
    listen: str
    status: str


class EmbeddedServer:
    """One embedded PostgreSQL in `base`, started on demand and reused while it runs."""

    def __init__(self, base: Path) -> None:
        self.base = Path(os.path.abspath(base))
        self.pgdata = self.base / "pgdata"
        self.run_dir = self.base / "run"
        self.log = self.base / "server.log"
        self.socket = self.run_dir / f".s.PGSQL.{PORT}"
        self.as_root = os.geteuid() == 0
        if _SHELL_UNSAFE & set(str(self.base)):
            raise EmbeddedError(
                f"the embedded PostgreSQL's folder {self.base} has a character "
                'pg_ctl cannot pass to the shell (one of " $ ` \\ or a newline)'
            )
        if len(os.fsencode(self.socket)) > SOCKET_PATH_MAX:
            raise EmbeddedError(
                f"the embedded PostgreSQL's socket path {self.socket} is too long for a Unix "
                "socket: choose a shorter folder (for a normal user, set XDG_DATA_HOME)"
            )

    def url(self) -> str:
        """A libpq URL of the running server, starting it first if it is not running."""
        try:
            owner = self._prepare()
            with self._locked():
                if self._wait_ready() is None:
                    self._start(owner)
        except (OSError, subprocess.SubprocessError) as error:
            raise EmbeddedError(
                f"the embedded PostgreSQL in {self.base} did not start: {error} "
                f"(its log: {self.log})"
            ) from error
        host = quote(str(self.run_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/postgres?host={host}&port={PORT}"

    def pid(self) -> int | None:
        """The running postmaster's pid, or None."""
        info = self._pid_file()
        return info.pid if info is not None else None

    def stop(self) -> None:
        """Stop the server if it runs (a fast shutdown: open sessions are ended)."""
        if not self.base.is_dir():
            return
        owner = self._prepare()
        with self._locked():
            info = self._pid_file()
            if info is None:
                return
            pg_ctl = self._bin_dir(owner, refresh=False) / "pg_ctl"
            self._run(owner, [pg_ctl, "stop", "-w", "-m", "fast", "-D", self.pgdata])
            # pg_ctl returns once postmaster.pid is gone, a moment before the process is.
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while _is_alive(info.pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    # Preparing base and the binaries.

    def _prepare(self) -> _Owner | None:
        """Create base (its missing parents with default modes) and make it private.

        As root, base is root's and the server user's group may only traverse it (0710):
        root copies and deletes files in it, so the server user (whom any SQL superuser can
        become, through COPY ... TO PROGRAM) must not be able to swap its entries for links.
        """
        owner = _system_user() if self.as_root else None
        self.base.mkdir(parents=True, exist_ok=True)
        if owner is None:
            _own_dir(self.base, None, 0o700)
        else:
            _own_dir(self.base, (0, owner.gid), 0o710)
        return owner

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold base/.lock: two processes starting the server at once would race."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.base / ".lock", flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _bin_dir(self, owner: _Owner | None, *, refresh: bool = True) -> Path:
        """The folder of initdb, pg_ctl and postgres.

        A normal user runs the wheel's binaries in place. As root they are copied into base
        once (the wheel's layout kept, so initdb's relative RPATH to pgserver.libs holds):
        the server user then needs no access to the virtualenv's folders.
        """
        wheel_bin = _wheel_bin()
        if owner is None:
            return wheel_bin
        site = wheel_bin.parents[2]
        copy = self.base / "pginstall"
        copied_bin = copy / wheel_bin.relative_to(site)
        stamp = copy / ".copied-from"
        want = f"{site}\n{_wheel_version()}\n"
        if copied_bin.is_dir() and (not refresh or _read(stamp) == want):
            return copied_bin
        staging = self.base / "pginstall.new"
        if staging.exists():
            shutil.rmtree(staging)
        pginstall = wheel_bin.parent.relative_to(site)
        for part in (pginstall / "bin", pginstall / "lib", pginstall / "share", "pgserver.libs"):
            if (site / part).is_dir():
                shutil.copytree(site / part, staging / part, symlinks=True)
        _readable_by_all(staging)
        (staging / stamp.name).write_text(want)
        if copy.exists():
            shutil.rmtree(copy)
        staging.rename(copy)
        return copied_bin

    # Starting.

    def _start(self, owner: _Owner | None) -> None:
        bin_dir = self._bin_dir(owner)
        ids = (owner.uid, owner.gid) if owner is not None else None
        _own_dir(self.run_dir, ids, 0o700)
        if not self.pgdata.is_dir():
            self._initdb(owner, bin_dir)
        if owner is not None:
            _own_file(self.log, (owner.uid, owner.gid), 0o600)
        self._clear_stale()
        options = " ".join(
            [
                f"-k {shlex.quote(str(self.run_dir))}",
                "-c listen_addresses=''",
                "-c unix_socket_permissions=0700",
                f"-p {PORT}",
            ]
        )
        timeout = str(START_TIMEOUT_SECONDS)
        pg_ctl = bin_dir / "pg_ctl"
        start: list[str | Path] = ["start", "-w", "-t", timeout, "-D", self.pgdata, "-l", self.log]
        self._run(owner, [pg_ctl, *start, "-o", options])
        if self._wait_ready() is None:
            raise EmbeddedError(
                f"the embedded PostgreSQL in {self.base} stopped right after "
                f"starting; see {self.log}"
            )

    def _initdb(self, owner: _Owner | None, bin_dir: Path) -> None:
        """Create the cluster in a folder of its own, renamed into place once complete.

        Trust authentication is safe only because the socket's folder is private; TCP
        connections are refused even if someone later turns TCP on.
        """
        staging = self.base / "pgdata.init"
        if staging.exists():  # an initdb that was killed: we hold the lock, nobody else runs one
            shutil.rmtree(staging)
        _own_dir(staging, (owner.uid, owner.gid) if owner is not None else None, 0o700)
        auth = ["--auth-local=trust", "--auth-host=reject"]
        settings = ["-U", SUPERUSER, *auth, "--encoding=UTF8", "--no-locale"]
        self._run(owner, [bin_dir / "initdb", "-D", staging, *settings])
        staging.rename(self.pgdata)

    def _wait_ready(self) -> _PidFile | None:
        """The running server, once ready; None if none runs. Refuses a server we did not
        configure (its socket elsewhere, or listening on TCP)."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            info = self._pid_file()
            if info is None:
                return None
            if info.status == "ready":
                if info.socket_dir != str(self.run_dir) or info.listen:
                    raise EmbeddedError(
                        f"a PostgreSQL server (pid {info.pid}) runs on {self.pgdata} with its "
                        f"socket in {info.socket_dir!r} and listening on {info.listen!r}, not "
                        "as topic-sync starts it; stop it first"
                    )
                return info
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"the PostgreSQL server in {self.pgdata} (pid {info.pid}) is still "
                    f"{info.status!r} after {START_TIMEOUT_SECONDS}s; see {self.log}"
                )
            time.sleep(0.1)

    def _pid_file(self) -> _PidFile | None:
        """postmaster.pid, if the process it names is alive and is this cluster's postmaster."""
        text = _read(self.pgdata / "postmaster.pid")
        lines = [line.strip() for line in (text or "").splitlines()]
        if not lines or not lines[0].isdigit():
            return None
        pid = int(lines[0])
        if not _is_postmaster_of(pid, self.pgdata):
            return None
        lines += [""] * (8 - len(lines))  # a starting server has not written every line yet
        return _PidFile(pid, lines[4], lines[5], lines[7])

    def _clear_stale(self) -> None:
        """Remove lock files whose pid now belongs to another process (after a reboot):
        postgres would take that process for a running server and refuse to start."""
        for path in (self.pgdata / "postmaster.pid", self.run_dir / f"{self.socket.name}.lock"):
            text = _read(path)
            first = text.split("\n", 1)[0].strip() if text else ""
            if first.isdigit() and not _is_postmaster_of(int(first), self.pgdata):
                path.unlink(missing_ok=True)

    def _run(self, owner: _Owner | None, args: Sequence[str | Path]) -> None:
        """Run one of PostgreSQL's programs as the server's user; its output goes to errors."""
        with tempfile.TemporaryFile() as output:
            try:
                # A file, not a pipe: pg_ctl's background server must not hold our pipe open.
                done = subprocess.run(
                    [str(arg) for arg in args],
                    cwd=self.base,
                    env=_CHILD_ENV,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    umask=0o077,
                    user=owner.uid if owner is not None else None,
                    group=owner.gid if owner is not None else None,
                    extra_groups=[] if owner is not None else None,  # not root's groups
                    timeout=START_TIMEOUT_SECONDS * 2,
                    check=False,
                )
            except PermissionError as error:
                if owner is None:
                    raise
                raise EmbeddedError(
                    f"the system user {owner.name!r} cannot run {args[0]}: every folder above "
                    f"{self.base} must be traversable by that user, and topic-sync changes no "
                    f"permission outside {self.base} ({error})"
                ) from None
            output.seek(0)
            said = output.read().decode(errors="replace").strip()
        if done.returncode != 0:
            name = Path(str(args[0])).name
            raise EmbeddedError(
                f"{name} failed (exit {done.returncode}) for the embedded PostgreSQL in "
                f"{self.base}: {said or 'no output'} (server log: {self.log})"
            )


# Helpers.


def _wheel_bin() -> Path:
    """The pgserver wheel's bin folder (pgserver._commands.POSTGRES_BIN_PATH), found without
    importing pgserver: its import sets up its own server management we do not use."""
    spec = importlib.util.find_spec("pgserver")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EmbeddedError("the pgserver wheel (PostgreSQL's binaries) is not installed")
    return Path(locations[0]) / "pginstall" / "bin"


def _wheel_version() -> str:
    try:
        return importlib.metadata.version("pgserver")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _system_user() -> _Owner:
    """The server's system user, created (without a home or a login shell) if missing."""
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SYSTEM_USER,
        ]
        try:
            done = subprocess.run(useradd, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise EmbeddedError(
                f"running as root, the embedded PostgreSQL needs a system user {SYSTEM_USER!r} "
                "and useradd is not available: create that user, or run as a normal user"
            ) from None
        try:  # another process may have created it in the meantime
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise EmbeddedError(
                f"could not create the system user {SYSTEM_USER!r}: {done.stderr.strip()}"
            ) from None
    if entry.pw_uid == 0:
        raise EmbeddedError(f"the system user {SYSTEM_USER!r} is root; PostgreSQL refuses root")
    return _Owner(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _own_dir(path: Path, owner: tuple[int, int] | None, mode: int) -> None:
    """Create a folder if missing and give it this owner (None: leave it) and mode.

    Through a descriptor opened without following links, so a link put in its place is
    refused rather than followed.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _own_fd(fd, owner, mode)
    finally:
        os.close(fd)


def _own_file(path: Path, owner: tuple[int, int], mode: int) -> None:
    """Create a regular file if missing and give it this owner and mode (links refused)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise EmbeddedError(f"{path} is not a regular file")
        _own_fd(fd, owner, mode)
    finally:
        os.close(fd)


def _own_fd(fd: int, owner: tuple[int, int] | None, mode: int) -> None:
    info = os.fstat(fd)
    if owner is not None and (info.st_uid, info.st_gid) != owner:
        os.fchown(fd, *owner)
    if stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)


def _readable_by_all(root: Path) -> None:
    """Folders 0755, programs 0755, other files 0644: the copy's modes do not depend on the
    umask the wheel was installed with. Only used inside base."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                continue
            executable = stat.S_ISDIR(info.st_mode) or info.st_mode & 0o111
            path.chmod(0o755 if executable else 0o644)
    root.chmod(0o755)


def _read(path: Path) -> str | None:
    """A small file's text, or None if it does not exist (links are not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "rb") as file:
        return file.read(64 * 1024).decode(errors="replace")


def _is_alive(pid: int) -> bool:
    """Whether process pid exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return True  # no /proc (macOS), or it just went: kill said it was there
    return not state or state[0] not in ("Z", "X")


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """Whether pid is alive and, where /proc tells, a postgres started on pgdata."""
    if not _is_alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone; or no /proc (macOS): trust the pid
    except PermissionError:
        return True
    return os.fsencode(pgdata) in args
