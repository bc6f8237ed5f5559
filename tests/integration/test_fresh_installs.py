"""Binder and Colab set-up, each run as it runs there: in a fresh virtualenv with an empty servekit cache.

* ``binder/postBuild`` (what repo2docker runs while it builds the image): servekit with its Jupyter extras,
  llama.cpp's prebuilt server and the demo models; then a server started in that environment is linked
  through jupyter-server-proxy under the hub's prefix and answers.
* The notebooks' Colab cell, in a venv without servekit and with ``google.colab`` importable (a stand-in
  package: this machine is not Colab): it installs servekit, enables Colab's widget manager, and the
  notebook's job then runs there (`servekit demo`: the prebuilt server, the demo model, one streamed reply).
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]


def fresh_venv(where: Path) -> Path:
    """A new virtualenv with pip (and nothing else); its bin folder."""
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    return where / "bin"


def env_for(bin_dir: Path, cache: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(bin_dir.parent),
               SERVEKIT_CACHE_DIR=str(cache), PYTHONNOUSERSITE="1", **extra)
    env.pop("PYTHONPATH", None)
    return env


def run(command: list[str], env: dict[str, str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


SERVE_AND_LINK = """
import servekit
from servekit import links
with servekit.serve("llamacpp", "demo", name="binder") as server:
    reply = server.client().completions.create(model=server.model, prompt="reverse: cold dark night",
                                               max_tokens=8, extra_body={"ignore_eos": True})
    print(json.dumps({"link": links.server_url(server), "port": server.port, "tokens": reply.usage.completion_tokens,
                      "engine": server.engine.name}))
"""


def test_binder_postbuild_makes_a_ready_image_in_a_fresh_virtualenv(tmp_path):
    bin_dir = fresh_venv(tmp_path / "venv")
    env = env_for(bin_dir, tmp_path / "cache")
    built = run(["bash", str(REPO / "binder" / "postBuild")], env, timeout=800)
    assert "llama-server" in built.stdout and "GPUs:" in built.stdout, built.stdout  # servekit doctor ran
    assert (tmp_path / "cache" / "demo").is_dir()
    extensions = run([str(bin_dir / "jupyter"), "server", "extension", "list"], env)
    listed = extensions.stdout + extensions.stderr
    assert "jupyter_server_proxy" in listed and "enabled" in listed.split("jupyter_server_proxy")[1][:80], listed
    hub = env_for(bin_dir, tmp_path / "cache", JUPYTERHUB_SERVICE_PREFIX="/user/ada/")
    served = run([str(bin_dir / "python"), "-c", "import json\n" + SERVE_AND_LINK], hub, timeout=120)
    result = json.loads(served.stdout.strip().splitlines()[-1])
    assert result["engine"] == "llamacpp" and result["tokens"] == 8
    assert result["link"] == f"/user/ada/proxy/{result['port']}/"


FAKE_OUTPUT = """import os


def enable_custom_widget_manager():
    with open(os.environ["FAKE_COLAB_LOG"], "a") as log:
        log.write("enable_custom_widget_manager\\n")
"""


def colab_cell() -> str:
    cells = json.loads((REPO / "notebooks" / "01-quickstart.ipynb").read_text())["cells"]
    cell = next(c for c in cells if "colab-setup" in c["metadata"].get("tags", []))
    return "".join(cell["source"])


def test_colab_cell_installs_servekit_and_the_notebook_then_runs(tmp_path):
    fake = tmp_path / "fake-colab" / "google" / "colab"  # `google` stays a namespace package
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "output.py").write_text(FAKE_OUTPUT)
    bin_dir = fresh_venv(tmp_path / "venv")
    log = tmp_path / "colab.log"
    env = env_for(bin_dir, tmp_path / "cache", FAKE_COLAB_LOG=str(log),
                  SERVEKIT_PIP_SPEC=f"servekit[jupyter] @ {REPO.as_uri()}")
    python = str(bin_dir / "python")
    absent = subprocess.run([python, "-c", "import servekit"], env=env, capture_output=True, cwd=tmp_path, check=False)
    assert absent.returncode != 0, "the fresh venv already has servekit"
    cell = f"import sys\nsys.path.insert(0, {str(tmp_path / 'fake-colab')!r})\n" + colab_cell()
    done = run([python, "-c", cell], env, timeout=600, cwd=tmp_path)
    assert log.read_text() == "enable_custom_widget_manager\n"
    assert "engines:" in done.stdout and "GPU runtime" in done.stdout, done.stdout
    demo = run([python, "-m", "servekit.cli", "demo"], env, timeout=300, cwd=tmp_path)
    assert "night dark cold" in demo.stdout and "nothing is left running" in demo.stdout, demo.stdout
