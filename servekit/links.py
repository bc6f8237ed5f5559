"""Links to a server's port that work where the notebook's browser is, not only on the kernel's machine.

:func:`public_url` turns a port on the kernel's machine into a URL for the browser:

* ``SERVEKIT_PUBLIC_URL`` set: that template, with ``{port}`` replaced (e.g.
  ``https://hub.example.org/user/me/proxy/{port}/``; environment variables may be named too:
  ``{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/``). It wins over everything below.
* Colab (``google.colab`` importable): Colab's kernel port proxy, ``google.colab.kernel.proxyPort(port)``,
  asked once per port through ``google.colab.output.eval_js`` (Colab strips raw iframes: servekit only
  shows links).
* JupyterHub and Binder (``JUPYTERHUB_SERVICE_PREFIX`` set): ``{prefix}proxy/{port}/`` through
  jupyter-server-proxy (the ``jupyter`` extra installs it). The link is relative to the hub's address
  unless ``JUPYTERHUB_EXTERNAL_URL`` / ``JUPYTERHUB_PUBLIC_URL`` names it.
* A Jupyter server under a path prefix (its ``base_url`` is not ``/``, e.g. behind a reverse proxy):
  ``{base_url}proxy/{port}/`` through jupyter-server-proxy.
* Otherwise (a laptop): ``http://127.0.0.1:{port}/``.

jupyter-server-proxy (>= 4.3) streams a response only when the request says ``Accept: text/event-stream``;
other responses arrive whole. Requests through the proxy also need the Jupyter login (the browser has it).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache

ENV_TEMPLATE = "SERVEKIT_PUBLIC_URL"
HUB_PREFIX = "JUPYTERHUB_SERVICE_PREFIX"
HUB_ORIGINS = ("JUPYTERHUB_EXTERNAL_URL", "JUPYTERHUB_PUBLIC_URL")
LOCAL_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Where:
    """How links are made here: ``kind`` is override, colab, jupyterhub, jupyter-server or local."""

    kind: str
    note: str = ""


def public_url(port: int, path: str = "", *, host: str = LOCAL_HOST) -> str:
    """A URL for ``port`` on the kernel's machine that opens in the notebook's browser, plus ``path``.

    ``host``: the address for the local case (the server's own, when it listens elsewhere than loopback).
    """
    return _join(_base(int(port), host), path)


def server_url(server: object, path: str = "") -> str:
    """:func:`public_url` for a server (anything with ``port`` and ``url``): ``server_url(s, "v1")``."""
    port = int(getattr(server, "port"))
    return _join(_base(port, _host_of(str(getattr(server, "url")))), path)


def public_link(server: object, local_url: str) -> str:
    """A URL of ``server`` as the browser reaches it (``local_url`` under the server's own ``url``)."""
    root = str(getattr(server, "url")).rstrip("/")
    if not local_url.startswith(root):
        return local_url
    return server_url(server, local_url[len(root):])


def where() -> Where:
    """Which rule :func:`public_url` follows in this process, and a line about it for people."""
    if os.environ.get(ENV_TEMPLATE):
        return Where("override", f"links from {ENV_TEMPLATE}")
    if _colab():
        return Where("colab", "links through Colab's port proxy")
    if os.environ.get(HUB_PREFIX):
        return Where("jupyterhub", "links through jupyter-server-proxy on JupyterHub")
    base = jupyter_base_url()
    if base not in (None, "/"):
        return Where("jupyter-server", f"links through jupyter-server-proxy under {base}")
    return Where("local", "links to this machine")


def link_template() -> str:
    """The shape of this process's links, ``{port}`` standing for the port (``servekit doctor`` shows it)."""
    kind = where().kind
    if kind == "override":
        return os.environ[ENV_TEMPLATE]
    if kind == "colab":
        return "Colab's port proxy: https://…-{port}-colab.googleusercontent.com/ (asked from the browser per port)"
    return _base_for_template(kind)


def _base_for_template(kind: str) -> str:
    if kind == "jupyterhub":
        origin = next((os.environ[name].rstrip("/") for name in HUB_ORIGINS if os.environ.get(name)), "")
        return origin + _slash(os.environ[HUB_PREFIX]) + "proxy/{port}/"
    if kind == "jupyter-server":
        return _slash(jupyter_base_url() or "/") + "proxy/{port}/"
    return f"http://{LOCAL_HOST}:{{port}}/"


def _base(port: int, host: str) -> str:
    kind = where().kind
    if kind == "override":
        return _from_template(os.environ[ENV_TEMPLATE], port)
    if kind == "colab":
        found = colab_proxy_url(port)
        if found:
            return found
    if kind in ("jupyterhub", "jupyter-server"):
        return _base_for_template(kind).replace("{port}", str(port))
    return f"http://{_bracket(host)}:{port}/"


def _from_template(template: str, port: int) -> str:
    try:
        return template.format_map({**os.environ, "port": port})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"{ENV_TEMPLATE}={template!r} is not a valid template: use {{port}} for the port "
                         f"(and {{NAME}} for an environment variable): {exc}") from None


def _join(base: str, path: str) -> str:
    return base if not path else base.rstrip("/") + "/" + path.lstrip("/")


def _slash(prefix: str) -> str:
    prefix = prefix if prefix.startswith(("/", "http://", "https://")) else "/" + prefix
    return prefix if prefix.endswith("/") else prefix + "/"


def _bracket(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return LOCAL_HOST
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or LOCAL_HOST


# -- Colab ------------------------------------------------------------------------------------------
def _colab() -> bool:
    import importlib.util
    import sys

    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


def colab_proxy_url(port: int) -> str | None:
    """Colab's proxy URL for ``port`` (asked from the browser once per port), or None where it cannot be asked.

    ``eval_js`` talks to the browser through the cell being run, so it is only asked from the main thread."""
    cached = _colab_cache.get(port)
    if cached is not None or threading.current_thread() is not threading.main_thread():
        return cached
    try:
        from google.colab.output import eval_js  # type: ignore[import-not-found]

        url = str(eval_js(f"google.colab.kernel.proxyPort({int(port)})", timeout_sec=20))
    except Exception:  # noqa: BLE001 - not in a Colab kernel, or the browser did not answer: no link
        return None
    if not url.startswith(("http://", "https://")):
        return None
    _colab_cache[port] = url if url.endswith("/") else url + "/"
    return _colab_cache[port]


_colab_cache: dict[int, str] = {}


# -- the Jupyter server that started this kernel ----------------------------------------------------
def jupyter_base_url() -> str | None:
    """``base_url`` of the Jupyter server that started this kernel (None when unknown or not in Jupyter)."""
    parent = os.environ.get("JPY_PARENT_PID")
    candidates = tuple(int(p) for p in (parent, str(os.getppid())) if p and p.isdigit())
    return _server_base_url(candidates)


@lru_cache(maxsize=8)
def _server_base_url(pids: tuple[int, ...]) -> str | None:
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    try:
        for info in list_running_servers():
            if info.get("pid") in pids:
                return str(info.get("base_url") or "/")
    except Exception:  # noqa: BLE001 - unreadable runtime files: treat as unknown
        return None
    return None


__all__ = ["ENV_TEMPLATE", "Where", "colab_proxy_url", "jupyter_base_url", "link_template", "public_link",
           "public_url", "server_url", "where"]
