"""servekit.links: links to a server's port that work where the notebook's browser is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest

from servekit import links


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch, tmp_path):
    """No hub, no override, no Colab, a Jupyter runtime dir of the test's own; caches cleared."""
    for name in (links.ENV_TEMPLATE, links.HUB_PREFIX, *links.HUB_ORIGINS, "JPY_PARENT_PID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setattr(links, "_colab", lambda: False)
    links._server_base_url.cache_clear()
    links._colab_cache.clear()
    yield
    links._server_base_url.cache_clear()
    links._colab_cache.clear()


def test_local_links_are_loopback():
    assert links.where().kind == "local"
    assert links.public_url(8080) == "http://127.0.0.1:8080/"
    assert links.public_url(8080, "v1") == "http://127.0.0.1:8080/v1"
    assert links.public_url(8080, "/v1/models") == "http://127.0.0.1:8080/v1/models"


def test_local_link_keeps_a_servers_own_address():
    server = SimpleNamespace(port=9000, url="http://10.1.2.3:9000")
    assert links.server_url(server, "v1") == "http://10.1.2.3:9000/v1"
    wildcard = SimpleNamespace(port=9000, url="http://0.0.0.0:9000")
    assert links.server_url(wildcard) == "http://127.0.0.1:9000/"
    ipv6 = SimpleNamespace(port=9000, url="http://[::1]:9000")
    assert links.server_url(ipv6, "v1") == "http://[::1]:9000/v1"


def test_jupyterhub_links_go_through_jupyter_server_proxy(monkeypatch):
    monkeypatch.setenv(links.HUB_PREFIX, "/user/alice/")
    assert links.where().kind == "jupyterhub"
    assert links.public_url(8080, "v1") == "/user/alice/proxy/8080/v1"
    monkeypatch.setenv("JUPYTERHUB_EXTERNAL_URL", "https://hub.example.org/")
    assert links.public_url(8080) == "https://hub.example.org/user/alice/proxy/8080/"


def test_binder_prefix_without_slashes_is_normalised(monkeypatch):
    monkeypatch.setenv(links.HUB_PREFIX, "user/org-repo-abc123")
    assert links.public_url(41000, "v1") == "/user/org-repo-abc123/proxy/41000/v1"


def test_override_template_wins(monkeypatch):
    monkeypatch.setenv(links.HUB_PREFIX, "/user/alice/")
    monkeypatch.setenv(links.ENV_TEMPLATE, "https://gpu-box.example.org:{port}")
    assert links.where().kind == "override"
    assert links.public_url(8080, "v1") == "https://gpu-box.example.org:8080/v1"
    monkeypatch.setenv(links.ENV_TEMPLATE, "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/")
    assert links.public_url(8080, "v1") == "/user/alice/proxy/8080/v1"


def test_bad_override_template_says_how_to_write_it(monkeypatch):
    monkeypatch.setenv(links.ENV_TEMPLATE, "https://x/{prot}/")
    with pytest.raises(ValueError, match=r"\{port\}"):
        links.public_url(8080)


def test_public_link_maps_a_page_of_the_server(monkeypatch):
    server = SimpleNamespace(port=8080, url="http://127.0.0.1:8080")
    assert links.public_link(server, "http://127.0.0.1:8080/") == "http://127.0.0.1:8080/"
    monkeypatch.setenv(links.HUB_PREFIX, "/user/bob/")
    assert links.public_link(server, "http://127.0.0.1:8080/ui/index.html") == "/user/bob/proxy/8080/ui/index.html"
    assert links.public_link(server, "https://elsewhere.org/x") == "https://elsewhere.org/x"


def test_colab_asks_the_browser_once_per_port(monkeypatch):
    asked: list[str] = []

    def eval_js(script: str, ignore_result: bool = False, timeout_sec: float | None = None) -> str:
        asked.append(script)
        return "https://abc-8080-colab.googleusercontent.com/"

    google = types.ModuleType("google")
    colab = types.ModuleType("google.colab")
    output = types.ModuleType("google.colab.output")
    output.eval_js = eval_js  # type: ignore[attr-defined]
    google.colab, colab.output = colab, output  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    monkeypatch.setattr(links, "_colab", lambda: True)
    assert links.where().kind == "colab"
    assert links.public_url(8080, "v1") == "https://abc-8080-colab.googleusercontent.com/v1"
    assert links.public_url(8080) == "https://abc-8080-colab.googleusercontent.com/"
    assert asked == ["google.colab.kernel.proxyPort(8080)"]


def test_colab_without_an_answer_falls_back_to_loopback(monkeypatch):
    monkeypatch.setattr(links, "_colab", lambda: True)
    monkeypatch.setitem(sys.modules, "google.colab.output", None)  # import fails: not a Colab kernel
    assert links.public_url(8080) == "http://127.0.0.1:8080/"


def test_jupyter_server_under_a_prefix_is_found_by_the_kernels_parent(monkeypatch, tmp_path):
    """The running Jupyter server that started this kernel (JPY_PARENT_PID) has base_url /lab-prefix/."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live pid for the file
    try:
        info = {"base_url": "/notebooks/team/", "pid": stand_in.pid, "port": 8888, "hostname": "127.0.0.1",
                "root_dir": str(tmp_path), "secure": False, "token": "", "url": "http://127.0.0.1:8888/notebooks/team/",
                "password": False, "sock": "", "version": "2"}
        (runtime / f"jpserver-{stand_in.pid}.json").write_text(json.dumps(info))
        monkeypatch.setenv("JPY_PARENT_PID", str(stand_in.pid))
        assert links.jupyter_base_url() == "/notebooks/team/"
        assert links.where().kind == "jupyter-server"
        assert links.public_url(8080, "v1") == "/notebooks/team/proxy/8080/v1"
    finally:
        stand_in.kill()
        stand_in.wait()


def test_a_server_at_the_root_keeps_loopback_links(monkeypatch, tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    info = {"base_url": "/", "pid": os.getpid(), "port": 8888, "url": "http://127.0.0.1:8888/"}
    (runtime / f"jpserver-{os.getpid()}.json").write_text(json.dumps(info))
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    assert links.jupyter_base_url() == "/"
    assert links.public_url(8080) == "http://127.0.0.1:8080/"
