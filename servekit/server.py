"""Server: one engine process — launched in its own session, waited for, talked to, stopped."""

from __future__ import annotations

import atexit
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from . import registry
from .engines import Engine, LaunchContext, LoraInfo, get_engine
from .errors import EngineNotInstalled, EngineRequestError, InvalidSpec, PortInUse, ServerNotFound, ServerStartError
from .paths import state_dir
from .registry import ServerRecord
from .spec import ServeSpec, short_name

if TYPE_CHECKING:
    import httpx
    import openai

    from .metrics import MetricsSnapshot

LOG_TAIL_LINES = 40
_owned: dict[str, Server] = {}
_owned_lock = threading.Lock()


def new_api_key() -> str:
    """A random API key; the ``sk-`` prefix keeps it from ever reading as a command-line flag."""
    return "sk-" + secrets.token_urlsafe(24)


def mask_key(key: str | None) -> str:
    """Show an API key as ``abcd…`` — never whole."""
    if not key:
        return "(none)"
    return key[:4] + "…"


class Server:
    """A running (or stopped) inference server. Made by :func:`serve` or found by :func:`running`."""

    def __init__(self, record: ServerRecord, engine: Engine, process: subprocess.Popen[bytes] | None = None):
        self.record = record
        self.engine = engine
        self._process = process
        self._ready = False

    # -- identity -----------------------------------------------------------------------------
    name = property(lambda self: self.record.name, doc="servekit's name for this server (``%stop NAME``).")
    url = property(lambda self: self.record.url, doc="Root URL, e.g. ``http://127.0.0.1:8080``.")
    base_url = property(lambda self: self.record.url + "/v1", doc="OpenAI-compatible base URL.")
    model = property(lambda self: self.record.served_name, doc="Model name to send in API requests.")
    pid = property(lambda self: self.record.pid)
    port = property(lambda self: self.record.port)
    api_key = property(lambda self: self.record.api_key)
    log_path = property(lambda self: Path(self.record.log_path))

    @property
    def orphan(self) -> bool:
        """True when the process that started this server has died (kernel restart, kill -9)."""
        return not registry.owner_alive(self.record)

    @property
    def detached(self) -> bool:
        """True for a server started to outlive its starter (``servekit serve --detach``)."""
        return self.record.owner_pid is None

    def is_running(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            return bool(registry.group_members(self.record))
        return registry.is_live(self.record)

    @property
    def status(self) -> str:
        if not self.is_running():
            return "stopped"
        if self.orphan:
            return "orphan"
        return "ready" if self._ready or self.ping() else "starting"

    # -- clients ------------------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kwargs: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` client for this server."""
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "none", **kwargs)

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` client for this server."""
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key or "none", **kwargs)

    def http(self, timeout: float = 30.0) -> httpx.Client:
        """An ``httpx.Client`` rooted at :attr:`url`, with the API key."""
        import httpx

        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=timeout)

    # -- logs, health, metrics ----------------------------------------------------------------
    def logs(self, n: int = LOG_TAIL_LINES) -> str:
        """The last ``n`` lines of the server's log."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return "".join(deque(handle, maxlen=n))
        except FileNotFoundError:
            return ""

    def ping(self, timeout: float | None = None) -> bool:
        """True if the engine's readiness probe answers 200 now (within the engine's ``health_timeout``)."""
        import httpx

        timeout = self.engine.health_timeout if timeout is None else timeout
        headers = self.engine.health_headers(self.api_key)
        try:
            return httpx.get(self.url + self.engine.health_path, headers=headers, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float | None = None) -> Server:
        """Poll the readiness probe until it answers; raise at once, with the log tail, if the process dies."""
        limit = timeout if timeout is not None else self.engine.startup_timeout
        deadline = time.monotonic() + limit
        delay = 0.02
        while True:
            if not self.is_running():
                raise ServerStartError(self._death_message())
            if self.ping(timeout=min(self.engine.health_timeout, max(0.1, deadline - time.monotonic()))):
                self._ready = True
                return self
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"{self.engine.display_name} did not become ready within {limit:.0f} s "
                    f"(probe {self.url}{self.engine.health_path}). Pass a longer timeout= if the model is large.\n"
                    f"Last {LOG_TAIL_LINES} log lines ({self.log_path}):\n{self.logs()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _death_message(self) -> str:
        code = self._process.poll() if self._process is not None else None
        tail = self.logs()
        hint = self.engine.diagnose(tail)
        status = f"exited with code {code}" if code is not None else "exited"
        return (
            f"{self.engine.display_name} {status} before it was ready."
            + (f"\n{hint}" if hint else "")
            + f"\nLast {LOG_TAIL_LINES} log lines ({self.log_path}):\n{tail}"
        )

    def metrics(self) -> MetricsSnapshot:
        """Scrape ``/metrics`` and return it with servekit's normalised names."""
        from .metrics import scrape

        return scrape(self.url, self.engine.metric_names, headers=self.headers())

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

    # -- stop ---------------------------------------------------------------------------------
    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the whole process group, wait, SIGKILL what is left; return once the port is free."""
        members = registry.group_members(self.record)
        _signal_all(members, signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=timeout)
        if alive:
            _signal_all(alive, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=5)
        leftovers = registry.group_members(self.record)  # children forked while we were stopping
        if leftovers:
            _signal_all(leftovers, signal.SIGKILL)
            psutil.wait_procs(leftovers, timeout=5)
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _wait_port_free(self.record.host, self.record.port, timeout=10)
        registry.discard(self.record)
        with _owned_lock:
            _owned.pop(self.record.id, None)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<Server {self.name!r} {self.engine.name} model={self.model!r} url={self.url} "
            f"pid={self.pid} key={mask_key(self.api_key)}>"
        )

    def _repr_html_(self) -> str:
        from html import escape

        rows = {
            "engine": self.engine.display_name,
            "model": self.model,
            "URL": f'<a href="{escape(self.url)}" target="_blank">{escape(self.base_url)}</a>',
            "API key": escape(mask_key(self.api_key)),
            "pid": str(self.pid),
            "log": escape(str(self.log_path)),
            "status": self.status,
        }
        note = self.engine.web_ui_note(self.url) if hasattr(self.engine, "web_ui_note") else None
        if note:
            rows["chat page"] = note
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows.items())
        return f"<b>servekit server {escape(self.name)}</b><table>{body}</table>"


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


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


def free_port(host: str) -> int:
    """A port the OS reports free on ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_port_free(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_is_free(host, port) and time.monotonic() < deadline:
        time.sleep(0.05)


def _unique_name(wanted: str | None, model: str) -> str:
    taken = {record.name for record in registry.live_records()}
    if wanted:
        if wanted in taken:
            raise InvalidSpec(f"A server named {wanted!r} is already running: stop it first or choose another name.")
        return wanted
    base = short_name(model)
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _choose_port(spec: ServeSpec) -> int:
    if spec.port is None:
        return free_port(spec.host)
    if not port_is_free(spec.host, spec.port):
        raise PortInUse(
            f"Port {spec.port} on {spec.host} is already in use. Choose another port, "
            "or leave the port out and servekit picks a free one."
        )
    return spec.port


def serve(engine: str, model: str, *, wait: bool = True, timeout: float | None = None, detach: bool = False,
          **options: Any) -> Server:
    """Start ``model`` on ``engine`` and return the ready :class:`Server`.

    ``options`` are :class:`ServeSpec` fields (``port``, ``ctx``, ``parallel``, ``lora={"n": "path"}``,
    ``extra_args=[...]`` …). Bad input raises before anything starts; a failed start leaves nothing running.
    """
    eng = get_engine(engine)
    spec = ServeSpec.build(eng.name, model, **options)
    availability = eng.available()
    if not availability:
        raise EngineNotInstalled(f"{eng.display_name} is not installed. {availability.install_hint}".strip())
    spec = eng.resolve(spec)
    name = _unique_name(spec.name, model)
    api_key = new_api_key() if spec.api_key is None else (spec.api_key or None)
    spec = spec.replace(name=name, port=_choose_port(spec), api_key=api_key)
    return _launch(eng, spec, wait=wait, timeout=timeout, detach=detach)


def _launch(eng: Engine, spec: ServeSpec, *, wait: bool, timeout: float | None, detach: bool) -> Server:
    assert spec.port is not None and spec.name is not None
    server_id = f"{spec.name}-{uuid.uuid4().hex[:8]}"
    run_dir = state_dir() / "run" / server_id
    (run_dir / "tmp").mkdir(parents=True, mode=0o700)
    log_path = state_dir() / "logs" / f"{server_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = eng.command(spec)
    env = {**os.environ, **eng.environment(spec, LaunchContext(run_dir=run_dir, log_path=log_path)), **spec.env_dict}
    with open(log_path, "ab") as log:
        log.write(f"# servekit: {' '.join(_redact(command, spec.api_key))}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       cwd=run_dir, env=env, start_new_session=True)
        except OSError as exc:
            registry.discard(_bare_record(server_id, spec, run_dir, log_path))
            raise EngineNotInstalled(f"Could not run {command[0]!r}: {exc}. {eng.available().install_hint}") from exc
    me = psutil.Process()
    record = ServerRecord(
        id=server_id, name=spec.name, engine=eng.name, model=spec.model, served_name=eng.served_name(spec),
        host=spec.host, port=spec.port, url=f"http://{_url_host(spec.host)}:{spec.port}",
        pid=process.pid, pgid=process.pid, create_time=_create_time(process.pid), log_path=str(log_path),
        run_dir=str(run_dir), api_key=spec.api_key, owner_pid=None if detach else me.pid,
        owner_create_time=None if detach else me.create_time(), started_at=time.time(),
        command=_redact(command, spec.api_key),
    )
    registry.save(record)
    server = Server(record, eng, process)
    if not detach:
        with _owned_lock:
            _owned[record.id] = server
    if wait:
        try:
            server.wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
    return server


def _bare_record(server_id: str, spec: ServeSpec, run_dir: Path, log_path: Path) -> ServerRecord:
    return ServerRecord(id=server_id, name=spec.name or "", engine=spec.engine, model=spec.model, served_name="",
                        host=spec.host, port=spec.port or 0, url="", pid=0, pgid=0, create_time=0.0,
                        log_path=str(log_path), run_dir=str(run_dir))


def _create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return time.time()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _redact(command: list[str], api_key: str | None) -> list[str]:
    """The command with the API key masked, also where it is written ``--api-key=KEY``."""
    if not api_key:
        return list(command)
    return [part.replace(api_key, mask_key(api_key)) for part in command]


def running() -> list[Server]:
    """Every live servekit server of this user on this machine, from any process; dead records are pruned."""
    servers = []
    for record in registry.live_records():
        with _owned_lock:
            owned = _owned.get(record.id)
        servers.append(owned or Server(record, get_engine(record.engine)))
    return servers


def get_server(name: str | None = None) -> Server:
    """The live server called ``name`` (or the newest one when ``name`` is None)."""
    servers = running()
    if not servers:
        missing = f"No running server named {name!r}: " if name else ""
        raise ServerNotFound(f"{missing}no servekit server is running. Start one with servekit.serve(...) or %serve.")
    if name is None:
        return servers[-1]
    for server in servers:
        if server.name == name:
            return server
    raise ServerNotFound(f"No running server named {name!r}. Running: {', '.join(s.name for s in servers)}.")


def stop_all() -> list[str]:
    """Stop every live server (orphans included); returns their names."""
    names = []
    for server in running():
        server.stop()
        names.append(server.name)
    return names


@atexit.register
def _stop_owned_at_exit() -> None:
    with _owned_lock:
        servers = list(_owned.values())
    for server in servers:
        try:
            server.stop(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
