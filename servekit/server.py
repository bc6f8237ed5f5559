"""Server: one engine process — launched in its own session, waited for, talked to, stopped.

Lifecycle (:attr:`Server.state`, kept by servekit itself, no network I/O):
``starting`` → ``ready`` → ``stopping`` → ``stopped``, or ``crashed`` when the engine's process ends
without being stopped (the record, exit status and log stay until the server is stopped).

Guarantees (docs/guarantees.md lists each with the test that proves it): a server started by a
process stops when that process ends — at exit, or through the watchdog (:mod:`servekit._watchdog`)
when the process is killed — unless it was started with ``detach=True``; signals reach only processes
that carry the server's identity marker; the API key never appears on a command line.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import psutil

from . import procs, registry
from .engines import Engine, LaunchContext, LoraInfo, get_engine
from .errors import (
    EngineNotInstalled,
    EngineRequestError,
    KeyRejected,
    NameTaken,
    PortInUse,
    ServekitError,
    ServerCrashed,
    ServerNotFound,
    ServerStartError,
    UnknownEngine,
)
from .keys import mask_key, new_api_key, redact
from .paths import check_socket_room, private_dir, run_dir_for, state_dir, state_dir_error
from .registry import ServerRecord
from .spec import ServeSpec, check_name, is_loopback, short_name

if TYPE_CHECKING:
    import httpx
    import openai
    import pandas

    from .metrics import MetricsRecorder, MetricsSnapshot

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
PORT_ATTEMPTS = 3  # a free port can be taken by another program before the engine binds it: retry elsewhere
EXIT_STOP_TIMEOUT = 5.0  # seconds each server gets to stop at interpreter exit (all stop in parallel)
FIRST_SAMPLE_WAIT_S = 6.0  # the first metrics sample: one scrape (its timeout is 5 s) and the /slots call
_owned: dict[str, Server] = {}
_attached: dict[str, Server] = {}  # by name: servers of others this process watches (:func:`attach`)
_owned_lock = threading.Lock()


class ExposedServerWarning(UserWarning):
    """A server listens on an address other machines can reach."""


def exit_description(code: int | None) -> str:
    """``killed by SIGKILL`` / ``exit code 1`` / ``exit status unknown``."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _PortRaceLost(ServerStartError):
    """The engine could not bind the port servekit had found free: another program took it meanwhile."""


class Server:
    """An inference server. Made by :func:`serve`, found by :func:`running` / :func:`get_server`."""

    def __init__(self, record: ServerRecord, engine: Engine, process: subprocess.Popen[bytes] | None = None,
                 attached: bool = False):
        self.record = record
        self.engine = engine
        self._process = process
        self.attached = attached  # a server servekit did not start (:func:`attach`): watched, never stopped
        self.view: Any = None  # what a notebook shows for it, set by an upper layer (%serve: the live panel)
        self._state_lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._recorder: MetricsRecorder | None = None

    # -- identity -----------------------------------------------------------------------------
    name = property(lambda self: self.record.name, doc="servekit's name for this server (``%stop NAME``).")
    url = property(lambda self: self.record.url, doc="Root URL, e.g. ``http://127.0.0.1:8080``.")
    base_url = property(lambda self: self.record.url + "/v1", doc="OpenAI-compatible base URL.")
    model = property(lambda self: self.record.served_name, doc="Model name to send in API requests.")
    pid = property(lambda self: self.record.pid)
    port = property(lambda self: self.record.port)
    api_key = property(lambda self: self.record.api_key)
    log_path = property(lambda self: Path(self.record.log_path))
    exit_code = property(lambda self: self.record.exit_code,
                         doc="How a crashed engine ended: >= 0 its exit code, < 0 minus the signal; else None.")
    command = property(lambda self: list(self.record.command),
                       doc="The engine's command line as servekit ran it (the API key is never on it).")

    def command_text(self) -> str:
        """:attr:`command` for people: quoted as a shell needs it, with an inline ``python -c`` launcher that
        servekit puts in front of an engine's own arguments shown as ``-c '…'``."""
        parts = []
        for i, arg in enumerate(self.command):
            inline_code = i > 0 and self.command[i - 1] == "-c" and ("\n" in arg or ";" in arg)
            parts.append("'…'" if inline_code else shlex.quote(arg))
        return " ".join(parts)

    def memory_mb(self) -> float:
        """Memory the engine's processes hold now, in MB: the sum of their PSS (each shared page split among
        the processes that map it, so vLLM's and SGLang's worker processes are not counted twice) where the
        system reports it, else of their RSS. 0.0 when nothing runs (or for an attached server)."""
        total = 0
        for proc in procs.members_of(self.record) if not self.attached else []:
            try:
                try:
                    total += proc.memory_full_info().pss
                except (AttributeError, psutil.AccessDenied):
                    total += proc.memory_info().rss
            except psutil.Error:
                continue  # it ended meanwhile
        return total / 1e6

    @property
    def owned(self) -> bool:
        """True when this process started the server (and watches its process)."""
        return self._process is not None

    @property
    def orphan(self) -> bool:
        """True when the process that started this server has died (the next servekit call stops it)."""
        return not registry.owner_alive(self.record)

    @property
    def detached(self) -> bool:
        """True for a server started to outlive its starter (``detach=True``, ``--keep``, ``--detach``)."""
        return self.record.owner_pid is None

    @property
    def state(self) -> str:
        """``starting``, ``ready``, ``stopping``, ``stopped`` or ``crashed`` — from servekit's own
        bookkeeping (the record and the local process table), never from a network call."""
        if self.owned or self.attached or self.record.state == "stopped":
            return self.record.state
        fresh = registry.load(self.record.id)
        if fresh is None:
            self.record.state = "stopped"
            return "stopped"
        self.record = fresh
        alive = fresh.state in ("starting", "ready", "stopping") and bool(procs.members_of(fresh))
        return registry.observed_state(fresh, alive)

    @property
    def state_text(self) -> str:
        """The state for people: ``crashed (killed by SIGKILL)`` …"""
        state = self.state
        return f"crashed ({exit_description(self.exit_code)})" if state == "crashed" else state

    @property
    def status(self) -> str:
        """Old name of :attr:`state`."""
        return self.state

    def is_running(self) -> bool:
        """True while the server is starting or ready."""
        return self.state in ("starting", "ready")

    # -- clients ------------------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kwargs: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` client for this server; a crashed server or a rejected key raise servekit
        errors that say what to do (:class:`~servekit.errors.ServerCrashed`, :class:`~servekit.errors.KeyRejected`)."""
        from ._openai import make_client

        return make_client(self, async_=False, **kwargs)

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` client for this server (same errors as :meth:`client`)."""
        from ._openai import make_client

        return make_client(self, async_=True, **kwargs)

    def http(self, timeout: float = 30.0) -> httpx.Client:
        """An ``httpx.Client`` rooted at :attr:`url`, with the API key."""
        from . import http

        return http.client(self.url, self.headers(), timeout)

    def env(self) -> dict[str, str]:
        """``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` for this server: a stock OpenAI client, or any
        program that reads them, connects unchanged (``os.environ.update(server.env())``)."""
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": self.api_key or "none"}

    def raise_if_down(self, cheap: bool = False) -> None:
        """Raise :class:`ServerCrashed` (or :class:`ServerNotFound` once stopped) when the server is not up.

        ``cheap``: only what this process knows already (no file or process-table reads)."""
        if cheap and not self.owned or self.attached:
            return
        state = self.state
        if state == "crashed":
            raise ServerCrashed(
                f"Server {self.name!r} ({self.engine.display_name}) has crashed ({exit_description(self.exit_code)}). "
                f"Its last log lines ({self.log_path}):\n{self.logs(10)}\n"
                f"Clear it with `%stop {self.name}` (or `servekit stop {self.name}`), then start it again."
            )
        if state == "stopped":
            raise ServerNotFound(f"Server {self.name!r} was stopped: start it again with servekit.serve(...) or %serve.")

    # -- logs, health, metrics ----------------------------------------------------------------
    def logs(self, n: int = LOG_TAIL_LINES) -> str:
        """The last ``n`` lines of the server's log, with the API key masked."""
        if self.attached:
            return f"(servekit did not start {self.name}: its log is wherever its own process writes it)\n"
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return redact("".join(deque(handle, maxlen=n)), self.api_key)
        except OSError:
            return ""

    def ping(self, timeout: float | None = None, http: httpx.Client | None = None) -> bool:
        """True if the engine's readiness probe answers 200 now (within the engine's ``health_timeout``)."""
        import httpx

        from . import http as http_clients

        timeout = self.engine.health_timeout if timeout is None else timeout
        headers = self.engine.health_headers(self.api_key)
        try:
            if http is not None:
                return http.get(self.engine.health_path, headers=headers, timeout=timeout).status_code == 200
            with http_clients.client(self.url, headers, timeout) as probe:
                return probe.get(self.engine.health_path).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float | None = None) -> Server:
        """Poll the readiness probe until the server answers *and* proves to be the one started (it takes
        this key and serves this model); raise at once, with the log tail, if the process dies."""
        limit = timeout if timeout is not None else self.engine.startup_timeout
        deadline = time.monotonic() + limit
        delay, why_not, next_log_check = 0.02, None, time.monotonic() + 1.0
        with self.http(timeout=self.engine.health_timeout) as http:
            while True:
                if self._has_exited():
                    raise self._start_failure()
                if time.monotonic() >= next_log_check:  # an engine that lost its port but does not exit (SGLang)
                    next_log_check = time.monotonic() + 1.0
                    if _says_port_taken(_file_tail(self.log_path), self.port):
                        raise _PortRaceLost(f"{self.engine.display_name} could not bind port {self.port}: "
                                            f"it was taken before the engine was ready.\n{self.logs()}")
                if self.ping(timeout=min(self.engine.health_timeout, max(0.1, deadline - time.monotonic())), http=http):
                    why_not = self.engine.identify(http, self.model)
                    if why_not is None:
                        self._set_state("ready")
                        return self
                if time.monotonic() >= deadline:
                    raise ServerStartError(self._timeout_message(limit, why_not))
                time.sleep(delay)
                delay = min(delay * 1.5, 0.25)

    def _has_exited(self) -> bool:
        if self._process is not None:
            return self._process.poll() is not None
        return not procs.members_of(self.record)

    def _timeout_message(self, limit: float, why_not: str | None) -> str:
        impostor = (f" Something answers on port {self.port}, but it is not this server: {why_not}."
                    if why_not else "")
        return (f"{self.engine.display_name} did not become ready within {limit:.0f} s "
                f"(probe {self.url}{self.engine.health_path}).{impostor} Pass a longer timeout= if the model is large.\n"
                f"Last {LOG_TAIL_LINES} log lines ({self.log_path}):\n{self.logs()}")

    def _start_failure(self) -> ServerStartError:
        code = self._process.poll() if self._process is not None else None
        tail = self.logs()
        hint = self.engine.diagnose(tail)
        status = exit_description(code) if code is not None else "exited"
        message = (f"{self.engine.display_name} {status.replace('exit code', 'exited with code')} before it was ready."
                   + (f"\n{hint}" if hint else "") + f"\nLast {LOG_TAIL_LINES} log lines ({self.log_path}):\n{tail}")
        return _PortRaceLost(message) if _says_port_taken(tail) else ServerStartError(message)

    def metrics(self) -> MetricsSnapshot:
        """Scrape ``/metrics`` and return it with servekit's normalised names."""
        from .metrics import scrape

        return scrape(self.url, self.engine.metric_names, headers=self.headers())

    def recorder(self, interval: float = 1.0) -> MetricsRecorder:
        """The server's one metrics recorder (started on first use; widgets and the load generator share it).

        It samples every ``interval`` seconds in one background thread and ends when the server stops."""
        from .metrics import MetricsRecorder

        with self._state_lock:
            if self._recorder is None or not self._recorder.running:
                self._recorder = MetricsRecorder.for_engine(
                    self.engine, self.url, headers=self.headers(), command=self.record.command, interval=interval,
                    should_continue=self.is_running, name=self.name,
                ).start()
            return self._recorder

    def metrics_history(self) -> pandas.DataFrame:
        """The recorded metrics over time, one row a sample, the same columns for every engine
        (docs/metrics.md). Recording starts at the first call of this or :meth:`recorder`; a first call
        waits for the first sample (at most a few seconds), so the frame is not empty."""
        recorder = self.recorder()
        recorder.wait_for_first_sample(timeout=recorder.interval + FIRST_SAMPLE_WAIT_S)
        return recorder.history()

    def dashboard(self) -> Any:
        """The server's panel (state, log tail, Stop) above its live charts, for a notebook cell
        (:func:`servekit.widgets.dashboard`; needs the ``jupyter`` extra)."""
        from .widgets import dashboard  # the display layer, loaded on use like pandas' DataFrame.plot

        return dashboard(self)

    # -- LoRA ---------------------------------------------------------------------------------
    def load_lora(self, name: str, path: str | os.PathLike[str]) -> None:
        """Load (or switch on) a LoRA adapter at run time; requests then name it as the model."""
        with self.http() as http:
            self.engine.load_lora(http, name, str(path))

    def unload_lora(self, name: str) -> None:
        """Unload (or switch off) a LoRA adapter at run time."""
        with self.http() as http:
            self.engine.unload_lora(http, name)

    def loras(self) -> list[LoraInfo]:
        """The adapters the server knows now."""
        with self.http() as http:
            return self.engine.list_loras(http)

    def constraint_options(self, *, json_schema: dict[str, Any] | str | None = None, regex: str | None = None,
                           choice: Sequence[str] | None = None, grammar: str | None = None) -> dict[str, Any]:
        """Keyword arguments for a chat request whose output must obey one constraint, spelled the way this
        server's engine reads it; raises UnsupportedConstraint where the engine would ignore it.

        ``client.chat.completions.create(messages=..., **server.constraint_options(choice=["yes", "no"]))``
        """
        from .constraints import constraint

        return self.engine.constraint_options(constraint(json_schema=json_schema, regex=regex, choice=choice,
                                                         grammar=grammar))

    def lora_request_options(self, adapter: str | None = None) -> dict[str, Any]:
        """``model`` and ``extra_body`` for an OpenAI request that applies LoRA ``adapter`` (None: base model).

        ``client.chat.completions.create(messages=..., **server.lora_request_options("next"))``
        """
        try:
            loras: list[LoraInfo] | None = self.loras()
        except (EngineRequestError, NotImplementedError):
            loras = None  # the engine cannot list its adapters: the request will tell
        if adapter is not None and loras is not None and adapter not in {info.name for info in loras}:
            have = ", ".join(sorted(info.name for info in loras)) or "none"
            raise ValueError(f"the server has no adapter {adapter!r} (it has: {have})")
        return self.engine.lora_request_options(self.model, adapter, loras or [])

    # -- state --------------------------------------------------------------------------------
    def _set_state(self, state: str, **changes: Any) -> None:
        with self._state_lock:
            registry.update(self.record, state=state, **changes)

    def _start_monitor(self) -> None:
        """Notice the engine's exit at once (a thread waiting on the process) and record a crash."""
        self._monitor = threading.Thread(target=self._watch_process, name=f"servekit-monitor-{self.name}",
                                         daemon=True)
        self._monitor.start()

    def _watch_process(self) -> None:
        assert self._process is not None
        code = self._process.wait()
        with self._state_lock:
            if self.record.state in ("stopping", "stopped"):
                return
            on_disk = registry.load(self.record.id)
            if on_disk is None or on_disk.state in ("stopping", "stopped"):  # stopped by another process
                self.record.state = "stopped"
                return
            registry.mark_crashed(self.record, code)
        log.warning("servekit: server %r crashed (%s); its log: %s", self.name, exit_description(code), self.log_path)
        procs.terminate([self.record], timeout=5)  # what the dead leader leaves behind (vLLM's EngineCore)

    # -- stop ---------------------------------------------------------------------------------
    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every process of the server, wait, SIGKILL what is left; return once the port is free.

        Also clears a crashed server from the listing (its log file stays)."""
        _stop_many([self], timeout)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"<Server {self.name!r} {self.engine.name} model={self.model!r} url={self.url} "
                f"pid={self.pid} state={self.record.state} key={mask_key(self.api_key)}>")

    def _ipython_display_(self) -> None:
        """In a notebook: the view an upper layer attached (``%serve`` attaches the live panel), else the
        table of :meth:`_repr_html_`."""
        from IPython.display import display

        if self.view is not None:
            display(self.view)
        else:
            display({"text/plain": repr(self), "text/html": self._repr_html_()}, raw=True)

    def _repr_html_(self) -> str:
        from html import escape

        rows = {
            "engine": escape(self.engine.display_name),
            "model": escape(self.model),
            "URL": f'<a href="{escape(self.url)}" target="_blank">{escape(self.base_url)}</a>',
            "API key": escape(f"{mask_key(self.api_key)} (full key: servekit key {self.name})"),
            "pid": str(self.pid),
            "log": escape(str(self.log_path)),
            "state": escape(self.state_text),
        }
        page = self.engine.web_ui(self.url)
        if page.url:
            rows["web page"] = f'<a href="{escape(page.url)}" target="_blank">{escape(page.note or page.url)}</a>'
        elif page.note:
            rows["web page"] = escape(page.note)
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows.items())
        return f"<b>servekit server {escape(self.name)}</b><table>{body}</table>"


def _stop_many(servers: list[Server], timeout: float) -> None:
    """Stop servers together: one SIGTERM round for all, one bounded wait, SIGKILL for the rest.
    An attached server is only forgotten: servekit did not start it and never stops it."""
    for server in [s for s in servers if s.attached]:
        if server._recorder is not None:
            server._recorder.stop()
        server.record.state = "stopped"
        with _owned_lock:
            _attached.pop(server.name, None)
    servers = [s for s in servers if not s.attached]
    if not servers:
        return
    for server in servers:
        with server._state_lock:
            if server.record.state != "stopped" and server.record.record_path.exists():
                registry.update(server.record, state="stopping")
    procs.terminate([s.record for s in servers], timeout=timeout)
    for server in servers:
        if server._recorder is not None:
            server._recorder.stop()
        if server._process is not None:
            try:
                server._process.wait(timeout=5)  # reap our child
            except subprocess.TimeoutExpired:
                pass
    deadline = time.monotonic() + 10
    for server in servers:
        if server.record.port:
            _wait_port_free(server.record.host, server.record.port, max(0.0, deadline - time.monotonic()))
    for server in servers:
        registry.discard(server.record)
        server.record.state = "stopped"
        _forget(server.record.id)


def _forget(server_id: str) -> None:
    with _owned_lock:
        _owned.pop(server_id, None)
    _watchdog.forget(server_id)


def port_is_free(host: str, port: int) -> bool:
    """True if a server could bind ``host:port`` now (with SO_REUSEADDR, as servers do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _says_port_taken(log_tail: str, port: int | None = None) -> bool:
    """The log says the engine could not bind its port (``port``: on a line that names it — engines' helpers such
    as torch's TCP store log the same words for ports of their own and then try another)."""
    for line in log_tail.lower().splitlines():
        if ("address already in use" in line or "couldn't bind" in line) and (port is None or str(port) in line):
            return True
    return False


def _file_tail(path: str | Path, size: int = 8192) -> str:
    """The last ``size`` bytes of a file as text ("" if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def ephemeral_ports() -> range:
    """The ports the OS hands out as the local end of outgoing connections (Linux: ``ip_local_port_range``;
    elsewhere IANA's 49152-65535)."""
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(49152, 65536)


SERVER_PORTS_FROM = 20000  # below: ports that well-known services and other tools tend to use


def free_port(host: str, avoid: Sequence[int] = ()) -> int:
    """A port free on ``host`` now, outside the ephemeral range: an engine binds its port seconds to minutes after
    servekit picks it, and a port from the ephemeral range can meanwhile become the local end of any outgoing
    connection on the machine — even of the readiness probe connecting to it (a TCP self-connect) — so the engine
    would fail with "address already in use". Falls back to a port the OS picks when that range is all there is."""
    import random

    ephemeral, avoided = ephemeral_ports(), set(avoid)
    pool = [p for p in range(SERVER_PORTS_FROM, 65536) if p not in ephemeral and p not in avoided]
    for port in random.sample(pool, min(len(pool), 64)):
        if port_is_free(host, port):
            return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_port_free(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_is_free(host, port) and time.monotonic() < deadline:
        time.sleep(0.02)


def _choose_port(spec: ServeSpec) -> int:
    if spec.port is None:
        return free_port(spec.host, avoid=[r.port for r in registry.load_all()])  # a listed server may be starting
    if not port_is_free(spec.host, spec.port):
        raise PortInUse(
            f"Port {spec.port} on {spec.host} is already in use. Choose another port, "
            "or leave the port out and servekit picks a free one."
        )
    return spec.port


# -- the watchdog, owner side ----------------------------------------------------------------------
class _Watchdog:
    """One :mod:`servekit._watchdog` process per process that starts servers; told which servers to stop
    if this process dies. Restarted (and told again) if it is gone; a forked child gets its own."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = 0
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def watch(self, server_id: str) -> None:
        with self._lock:
            self._ids.add(server_id)
            self._send(f"watch {server_id}")

    def forget(self, server_id: str) -> None:
        with self._lock:
            if server_id in self._ids:
                self._ids.discard(server_id)
                self._send(f"forget {server_id}", start=False)

    def _send(self, line: str, start: bool = True) -> None:
        for _ in range(2):
            proc = self._running() or (self._start() if start else None)
            if proc is None:
                return
            try:
                assert proc.stdin is not None
                proc.stdin.write((line + "\n").encode())
                proc.stdin.flush()
                return
            except (OSError, ValueError):
                self._proc = None  # it died: start a new one and tell it everything again
        warnings.warn("servekit could not start its watchdog: servers of this process may outlive it if it is "
                      "killed (the next servekit call stops them).", RuntimeWarning, stacklevel=4)

    def _running(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._owner == os.getpid() and self._proc.poll() is None:
            return self._proc
        return None

    def _start(self) -> subprocess.Popen[bytes] | None:
        me = psutil.Process()
        package_parent = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "SERVEKIT_STATE_DIR": str(state_dir()),
               "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)}
        env.pop(procs.MARKER, None)
        try:
            with _open_private(state_dir() / "logs" / "watchdog.log") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "servekit._watchdog", str(me.pid), repr(me.create_time())],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log_file, cwd=state_dir(), env=env,
                    start_new_session=True,
                )
        except OSError:
            return None
        self._proc, self._owner = proc, os.getpid()
        assert proc.stdin is not None
        for server_id in sorted(self._ids):
            proc.stdin.write(f"watch {server_id}\n".encode())
        return proc


_watchdog = _Watchdog()


def _open_private(path: Path) -> IO[bytes]:
    """Open ``path`` for appending, created 0600 in a 0700 folder (logs hold what engines print)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


# -- starting servers ------------------------------------------------------------------------------
def serve(engine: str, model: str, *, wait: bool = True, timeout: float | None = None, detach: bool = False,
          **options: Any) -> Server:
    """Start ``model`` on ``engine`` and return the ready :class:`Server`.

    ``options`` are :class:`ServeSpec` fields (``port``, ``ctx``, ``parallel``, ``lora={"n": "path"}``,
    ``api_key="..."`` (``""``: no key), ``extra_args=[...]`` …). Bad input raises before anything starts;
    a failed or interrupted start leaves nothing running. The server stops when this process ends
    (also if it is killed), unless ``detach=True``.
    """
    eng = get_engine(engine)
    spec = ServeSpec.build(eng.name, model, **options)
    availability = eng.available()
    if not availability:
        raise EngineNotInstalled(f"{eng.display_name} is not installed. {availability.install_hint}".strip())
    spec = eng.resolve(spec)
    spec = spec.replace(api_key=new_api_key() if spec.api_key is None else spec.api_key)
    _warn_if_exposed(spec)
    reap_orphans()
    attempts = PORT_ATTEMPTS if spec.port is None else 1
    for attempt in range(1, attempts + 1):
        chosen = spec.replace(port=_choose_port(spec))
        record = _reserve(eng, chosen, detach, source_model=model)
        try:
            server = _launch(eng, chosen, record, detach)
        except BaseException:  # an interrupt just before or after _launch's own clean-up: nothing may stay
            _undo_start(record)
            raise
        if not wait:
            return server
        try:
            return server.wait_ready(timeout)
        except _PortRaceLost as exc:
            server.stop()
            if attempt == attempts:
                raise (ServerStartError if spec.port is None else PortInUse)(str(exc)) from None
            log.info("servekit: port %s was taken before %s bound it; trying another", chosen.port, eng.display_name)
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable")


def _warn_if_exposed(spec: ServeSpec) -> None:
    if is_loopback(spec.host):
        return
    if spec.api_key:
        message = (f"The server will listen on {spec.host}, reachable from other machines; requests need its "
                   "API key. Leave host out to keep it on 127.0.0.1.")
    else:
        message = (f"The server will listen on {spec.host} WITHOUT an API key: anyone who can reach this machine "
                   "can use it. Leave host out (127.0.0.1), or keep a key.")
    warnings.warn(message, ExposedServerWarning, stacklevel=3)


def _reserve(eng: Engine, spec: ServeSpec, detach: bool, source_model: str) -> ServerRecord:
    """Reserve the server's name (unique among listed servers, across processes) with a ``starting`` record.
    An interrupt after the record is written (a signal to ``servekit serve`` at that moment) removes it."""
    saved: list[ServerRecord] = []
    try:
        return _write_reservation(eng, spec, detach, source_model, saved)
    except BaseException:
        for record in saved:
            registry.discard(record)
        raise


def _write_reservation(eng: Engine, spec: ServeSpec, detach: bool, source_model: str,
                       saved: list[ServerRecord]) -> ServerRecord:
    """The reservation itself, under the registry lock; the record goes into ``saved`` before it is written."""
    with registry.lock():
        records = registry.load_all()
        alive = procs.members(records)
        taken: set[str] = set()
        for record in records:
            state = registry.observed_state(record, bool(alive[record.id]))
            if state == "stopped" or (state == "crashed" and record.name == spec.name):
                registry.discard(record)  # a crashed server's name is free again for a new start
            else:
                taken.add(record.name)
        name = _unique_name(spec.name, _model_label(spec), taken)
        server_id = f"{name}-{uuid.uuid4().hex[:8]}"
        run_dir = run_dir_for(server_id)
        check_socket_room(run_dir, eng.longest_socket, eng.display_name)
        me = psutil.Process()
        record = ServerRecord(
            id=server_id, name=name, engine=eng.name, model=spec.model, served_name=eng.served_name(spec),
            host=spec.host, port=spec.port or 0, url=f"http://{_url_host(spec.host)}:{spec.port}",
            pid=0, pgid=0, create_time=0.0, log_path=str(state_dir() / "logs" / f"{server_id}.log"),
            run_dir=str(run_dir), api_key=spec.api_key or None,
            owner_pid=None if detach else me.pid, owner_create_time=None if detach else me.create_time(),
            started_at=time.time(), state="starting", source_model=source_model,
        )
        saved.append(record)  # before it exists on disk: an interrupt inside save() is cleaned up too
        registry.save(record)
        registry.prune_logs(protected={r.log_path for r in records})
    return record


def _model_label(spec: ServeSpec) -> str:
    return spec.served_name or spec.model


def _unique_name(wanted: str | None, model: str, taken: set[str]) -> str:
    if wanted:
        if wanted in taken:
            raise NameTaken(f"A server named {wanted!r} is already running: stop it first (%stop {wanted}) "
                            "or choose another name.")
        return wanted
    base = short_name(model)[:56]
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _launch(eng: Engine, spec: ServeSpec, record: ServerRecord, detach: bool) -> Server:
    """Start the engine for a reserved record; on any failure (an interrupt included) stop whatever
    started — found by its identity marker, so no moment leaves an engine behind — and drop the record."""
    try:
        spec = spec.replace(name=record.name)
        run_dir = private_dir(Path(record.run_dir))
        private_dir(run_dir / "tmp")
        launch = eng.launch(spec, LaunchContext(run_dir=run_dir, log_path=Path(record.log_path)))
        env = {**os.environ, **launch.env, **spec.env_dict, procs.MARKER: record.id}
        if not detach:
            _watchdog.watch(record.id)  # before the engine exists: no window in which it is unwatched
        with _open_private(Path(record.log_path)) as log_file:
            log_file.write(f"# servekit: {' '.join(launch.command)}\n".encode())
            log_file.flush()
            try:
                process = subprocess.Popen(launch.command, stdin=subprocess.DEVNULL, stdout=log_file,
                                           stderr=subprocess.STDOUT, cwd=run_dir, env=env, start_new_session=True)
            except OSError as exc:
                raise EngineNotInstalled(
                    f"Could not run {launch.command[0]!r}: {exc}. {eng.available().install_hint}") from exc
        registry.update(record, pid=process.pid, pgid=process.pid, create_time=_create_time(process.pid),
                        command=launch.command, started_at=time.time())
        server = Server(record, eng, process)
        server._start_monitor()
        if not detach:
            with _owned_lock:
                _owned[record.id] = server
        return server
    except BaseException as exc:
        _undo_start(record)
        if isinstance(exc, OSError):
            raise state_dir_error(exc) from exc
        raise


def _undo_start(record: ServerRecord) -> None:
    """Stop whatever a start got to (found by its identity marker), drop its record and forget it."""
    procs.terminate([record], timeout=5)
    registry.discard(record)
    _forget(record.id)


def _create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return time.time()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# -- finding and stopping servers ------------------------------------------------------------------
def attach(url: str, api_key: str | None = None, engine: str | None = None, name: str | None = None) -> Server:
    """A handle on a server servekit did not start (a vLLM on a cluster, a llama-server of your own):
    ``metrics()``, ``metrics_history()``, the widgets, ``%%chat``, ``client()`` and the load generator take it
    like any other. The engine is recognised from what the server exposes (metric names, ``/version``,
    ``/props``, ``/server_info``) unless given. Listed by :func:`running` in this process; ``stop()`` only
    forgets it."""
    import httpx

    from . import http as http_clients
    from .engines import engine_names

    root = url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with http_clients.client(root, headers, timeout=10) as http:
        try:
            models = http.get("/v1/models")
        except httpx.HTTPError as exc:
            raise ServerNotFound(f"Nothing answers at {root} ({exc}): check the URL and that the server runs.") from exc
        if models.status_code == 401:
            raise KeyRejected(f"{root} needs an API key: servekit.attach({url!r}, api_key=...)"
                              + (" — the one given was rejected." if api_key else "."))
        if models.status_code != 200:
            raise ServerNotFound(f"{root}/v1/models answered {models.status_code}: is it an OpenAI-compatible server?")
        ids = [str(item.get("id")) for item in models.json().get("data", []) if isinstance(item, dict)]
        eng = get_engine(engine) if engine else _recognise(http, engine_names())
    served = next((i for i in ids if i), "")
    parsed = httpx.URL(root)
    label = name or f"{eng.name}-{parsed.host}-{parsed.port or 80}"
    record = ServerRecord(
        id=f"attached-{uuid.uuid4().hex[:8]}", name=check_name(label.replace(".", "-")), engine=eng.name,
        model=served, served_name=served, host=parsed.host, port=parsed.port or 80, url=root, pid=0, pgid=0,
        create_time=0.0, log_path="", run_dir="", api_key=api_key, started_at=time.time(), state="ready",
        source_model=served,
    )
    server = Server(record, eng, attached=True)
    with _owned_lock:
        _attached[server.name] = server
    return server


def _recognise(http: httpx.Client, names: list[str]) -> Engine:
    try:
        response = http.get("/metrics")
        metrics_text = response.text if response.status_code == 200 else ""
    except Exception:  # noqa: BLE001 - a server without /metrics is recognised by its other endpoints
        metrics_text = ""
    for candidate in names:
        engine = get_engine(candidate)
        if engine.recognise(http, metrics_text):
            return engine
    raise UnknownEngine(f"servekit does not recognise the server at {http.base_url}: pass engine= "
                        f"(one of {', '.join(names)}).")


def reap_orphans() -> list[str]:
    """Stop servers whose starter died without its watchdog stopping them (detached ones are kept).

    Every servekit call that lists or starts servers runs this first; returns the names stopped."""
    orphans = [r for r in registry.load_all() if r.owner_pid is not None and not registry.owner_alive(r)]
    if not orphans:
        return []
    procs.terminate(orphans, timeout=10)
    for record in orphans:
        registry.discard(record)
    names = [r.name for r in orphans]
    log.warning("servekit: stopped orphaned server(s) %s: the process that started them is gone",
                ", ".join(names))
    return names


def running() -> list[Server]:
    """Every server of this user on this machine, from any process, oldest first: starting, ready — and
    crashed ones, listed until stopped. Orphans (their starter died) are stopped first."""
    reap_orphans()
    records = registry.load_all()
    alive = procs.members(records)
    servers = []
    for record in records:
        state = registry.observed_state(record, bool(alive[record.id]))
        if state == "stopped":
            registry.discard(record)
            continue
        if state == "crashed" and record.state != "crashed":
            registry.mark_crashed(record, record.exit_code)
        with _owned_lock:
            owned = _owned.get(record.id)
        if owned is not None:
            servers.append(owned)
            continue
        try:
            servers.append(Server(record, get_engine(record.engine)))
        except UnknownEngine:
            continue  # an engine plug-in that is no longer installed
    with _owned_lock:
        servers += list(_attached.values())
    return servers


def get_server(name: str | None = None) -> Server:
    """The listed server called ``name`` (or the newest one when ``name`` is None); crashed ones included."""
    servers = running()
    if not servers:
        missing = f"No server named {name!r}: " if name else ""
        raise ServerNotFound(f"{missing}no servekit server is running. Start one with servekit.serve(...) or %serve.")
    if name is None:
        return servers[-1]
    for server in servers:
        if server.name == name:
            return server
    raise ServerNotFound(f"No server named {name!r}. Listed: {', '.join(s.name for s in servers)}.")


def stop_all(timeout: float = 15.0) -> list[str]:
    """Stop every listed server (crashed ones are cleared), all at once; returns their names."""
    servers = running()
    _stop_many(servers, timeout)
    return [s.name for s in servers]


@atexit.register
def _stop_owned_at_exit() -> None:
    """At interpreter exit, stop this process's servers in parallel within a bounded time (the watchdog
    finishes the job if this is cut short)."""
    with _owned_lock:
        servers = [s for s in _owned.values() if s.record.owner_pid == os.getpid()]
    try:
        _stop_many(servers, EXIT_STOP_TIMEOUT)
    except Exception:  # noqa: BLE001 - best effort at interpreter exit; the watchdog covers the rest
        pass


__all__ = ["ExposedServerWarning", "Server", "attach", "get_server", "reap_orphans", "running", "serve", "stop_all",
           "ServekitError"]
