"""End to end in a real browser: JupyterLab on 127.0.0.1, Debian's Chromium driven by Playwright.

The notebook ``dashboard.ipynb`` (next to this file) starts llama-server with the demo model, sends
requests from a background thread, shows ``dashboard(server)`` and then runs ``%bench`` over three load
levels. The test waits for the panel to read "ready" and the tokens/s chart to gain points, for the bench
chart to gain points while ``%bench`` still runs and for its throughput–latency plot at the end, saves
screenshots to ``.ci/artifacts/``, clicks Stop and checks with psutil that the engine process is gone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

import servekit
from servekit.server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("llama_server_ready"), pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parents[1] / ".ci" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SETTINGS = {  # no news toast, every cell rendered (no virtual scrolling)
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
CHART_POINTS = """() => {
    const chart = document.querySelector('.servekit-metrics svg[data-chart]');  // generated tokens/s
    if (!chart) return null;
    return {points: Number(chart.dataset.points), max: Number(chart.dataset.max)};
}"""
BENCH_POINTS = """() => {
    const chart = document.querySelector('.servekit-bench-chart svg[data-chart]');  // output tokens/s
    return chart ? Number(chart.dataset.points) : 0;  // one point a second
}"""


@dataclass
class Lab:
    base: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    root: Path  # the notebooks' folder

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(f"{self.base}{path}?token={self.token}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a token, its own Jupyter dirs, and a kernel running this Python."""
    pytest.importorskip("jupyterlab", reason="JupyterLab comes with the `jupyter` extra")
    root = tmp_path / "root"
    shutil.copytree(HERE, root, ignore=shutil.ignore_patterns("*.py", "__pycache__", ".ipynb_checkpoints"))
    data = tmp_path / "data"
    _write_json(data / "kernels" / "python3" / "kernel.json", {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (servekit test)", "language": "python"})
    for name, value in SETTINGS.items():
        _write_json(tmp_path / "settings" / name, value)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(data),
           "JUPYTER_PATH": str(data), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "IPYTHONDIR": str(tmp_path / "ipython")}
    port, token = free_port("127.0.0.1"), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    server = Lab(f"http://127.0.0.1:{port}", token, process, log, root)
    try:
        _wait_until_up(server)
        yield server
    finally:
        _shut_down(server)


def _wait_until_up(lab: Lab, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {lab.process.returncode}:\n{lab.log.read_text()[-3000:]}")
        try:
            lab.api("/api/status")
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {timeout:.0f} s:\n{lab.log.read_text()[-3000:]}")


def _shut_down(lab: Lab) -> None:
    """Shut the kernels down (their own clean-up runs), then JupyterLab, by the PID this test started."""
    try:
        for kernel in lab.api("/api/kernels") or []:  # type: ignore[union-attr]
            lab.api(f"/api/kernels/{kernel['id']}", method="DELETE")
    except (urllib.error.URLError, OSError):
        pass
    lab.process.terminate()
    try:
        lab.process.wait(30)
    except subprocess.TimeoutExpired:
        lab.process.kill()
        lab.process.wait()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_dashboard_in_jupyterlab(lab: Lab) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    from servekit.demo import resolve_model

    resolve_model("demo", "gguf")  # the trained demo model, built once (make engines does it in CI)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"[:300]) if msg.type in ("error", "warning") else None)
        try:
            _run_notebook(page, lab)
            state = page.locator(".servekit-panel .servekit-state").first
            state.wait_for(timeout=300_000)
            _wait_for_text(page, state, "ready", 120)
            chart = _wait_for_chart(page, 120)
            page.wait_for_timeout(1500)  # one more tick: the picture shows a line, not a dot
            page.locator(".servekit-dashboard").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "browser-dashboard.png"), full_page=True)
            page.locator(".servekit-dashboard").first.screenshot(path=str(ARTIFACTS / "browser-dashboard-widget.png"))
            pid = int(page.locator(".servekit-panel .servekit-pid").first.inner_text())
            # llama-server itself, or the prebuilt server's Python (-m servekit.engines._llamacpp_prebuilt)
            engine_command = " ".join(psutil.Process(pid).cmdline()) if psutil.pid_exists(pid) else ""
            assert "llama" in engine_command, f"no llama.cpp server at pid {pid}: {engine_command!r}"
            bench_points = _wait_for_bench(page, 180)
            page.locator(".servekit-bench-chart").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "browser-bench.png"), full_page=True)

            page.locator(".servekit-panel .servekit-stop").first.click()
            _wait_for_text(page, page.locator(".servekit-panel .servekit-state").first, "stopped", 60)
            deadline = time.monotonic() + 30
            while not _gone(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            page.screenshot(path=str(ARTIFACTS / "browser-dashboard-stopped.png"), full_page=True)
            errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
        except Exception as exc:
            page.screenshot(path=str(ARTIFACTS / "browser-dashboard-failure.png"), full_page=True)
            raise AssertionError(f"{exc}\nbrowser console (errors, warnings): {console[-20:]}") from exc
        finally:
            browser.close()
    assert chart["points"] >= 3 and chart["max"] > 0, chart
    print("\nbench chart points (prompt, points):", bench_points)
    assert bench_points["while_running"] >= 2 and bench_points["at_end"] >= 8, bench_points  # 3 levels × 4 s
    assert _gone(pid), f"the engine process {pid} is still running after Stop"
    assert servekit.running() == [], "Stop left the server listed"
    assert not tracebacks, tracebacks
    assert not problems, problems


def _run_notebook(page, lab: Lab, name: str = "dashboard.ipynb") -> None:  # noqa: ANN001 - playwright's Page
    _open_notebook(page, lab, name)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def _wait_for_text(page, locator, text: str, timeout_s: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    seen = ""
    while time.monotonic() < deadline:
        seen = locator.inner_text()
        if text in seen:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"the panel reads {seen!r}, not {text!r}, after {timeout_s:.0f} s")


def _wait_for_chart(page, timeout_s: float) -> dict[str, float]:  # noqa: ANN001
    """Until the tokens/s chart holds at least 3 points and some tokens were generated."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        seen = page.evaluate(CHART_POINTS)
        if seen and seen["points"] >= 3 and seen["max"] > 0:
            return seen
        page.wait_for_timeout(500)
    raise AssertionError(f"the chart did not gain points with data: {seen}")


def _wait_for_bench(page, timeout_s: float, bench_cell=None) -> dict[str, int]:  # noqa: ANN001
    """Points of the %bench chart while its cell (default: the last) still runs ([*]), then once the sweep's
    plot is shown."""
    bench_cell = bench_cell or page.locator(".jp-Notebook .jp-Cell").last
    deadline = time.monotonic() + timeout_s
    while_running = 0
    seen: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        points = page.evaluate(BENCH_POINTS)
        prompt = bench_cell.locator(".jp-InputPrompt").inner_text()
        seen.append((prompt, points))
        if "*" in prompt:
            while_running = max(while_running, points)
        elif page.locator(".js-plotly-plot", has_text="Throughput vs latency").count():
            return {"while_running": while_running, "at_end": points, "seen": seen[-30:]}
        page.wait_for_timeout(500)
    raise AssertionError(f"%bench did not end with its plot within {timeout_s:.0f} s "
                         f"(chart points while running: {while_running}; prompt and points seen: {seen[-30:]})")


def test_concurrency_notebook_charts_its_sweep_live_in_jupyterlab(lab: Lab) -> None:
    """The concurrency lesson as a student opens it: its %bench sweep's chart gains points while the cell runs."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    name = "05-concurrency.ipynb"
    shutil.copy(HERE.parents[1] / "notebooks" / name, lab.root / name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        try:
            _run_notebook(page, lab, name)
            cell = page.locator(".jp-Notebook .jp-CodeCell", has_text="%bench batching").first
            cell.wait_for(timeout=120_000)
            points = _wait_for_bench(page, 300, cell)
            cell.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "browser-concurrency.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-concurrency-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    print("\nconcurrency notebook, bench chart points (prompt, points):", points)
    assert points["while_running"] >= 2 and points["at_end"] >= 4, points  # 4 levels, one point a second


def test_launcher_starts_a_server_and_the_chat_panel_streams_a_reply(lab: Lab) -> None:
    """A person's path without code: the Launcher starts llama.cpp with the demo model, the ChatPanel streams a
    reply and shows its TTFT, the server answers through jupyter-server-proxy, and the panel's Stop stops it."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    from servekit.demo import resolve_model

    resolve_model("demo", "gguf")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        try:
            _open_notebook(page, lab, "launcher.ipynb")
            _run_cell(page, 0)
            launcher = page.locator(".servekit-launcher").first
            launcher.wait_for(timeout=120_000)
            engine = launcher.locator("button", has_text="llama-server").first
            _wait_until(page, lambda: engine.is_enabled() and "info" in (engine.get_attribute("class") or ""), 120,
                        "the Launcher did not find llama.cpp installed and choose it")
            model = launcher.locator("input").first
            _wait_until(page, lambda: model.input_value() == "demo", 60, "the model field did not offer 'demo'")
            launcher.locator("button", has_text="Start").first.click()
            message = launcher.locator(".servekit-launcher-message").first
            _wait_for_text(page, message, "is ready", 120)
            _wait_for_text(page, launcher.locator(".servekit-panel .servekit-state").first, "ready", 30)
            launcher.screenshot(path=str(ARTIFACTS / "browser-launcher.png"))
            (server,) = servekit.running()
            proxied = urllib.request.urlopen(f"{lab.base}/proxy/{server.port}/health?token={lab.token}", timeout=10)
            assert proxied.status == 200 and json.loads(proxied.read()).get("status") == "ok"

            _run_cell(page, 1)
            chat = page.locator(".servekit-chat").first
            chat.wait_for(timeout=60_000)
            chat.locator("textarea").nth(1).fill("reverse: cold dark night")
            chat.locator("button", has_text="Send").first.click()
            stats = chat.locator(".servekit-chat-stats").first
            _wait_for_text(page, stats, "TTFT", 60)
            reply = chat.inner_text()
            chat.screenshot(path=str(ARTIFACTS / "browser-chat.png"))
            memory = _memory_of_tree(lab.process.pid)  # what a Binder session holds here, browser aside

            launcher.locator(".servekit-panel .servekit-stop").first.click()
            _wait_for_text(page, launcher.locator(".servekit-panel .servekit-state").first, "stopped", 60)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-launcher-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert "night dark cold" in reply, reply
    assert "tokens/s" in stats_text(reply) and "completion tokens" in reply, reply
    assert servekit.running() == [], "Stop left the server listed"
    (ARTIFACTS / "browser-memory.json").write_text(json.dumps(memory, indent=1))
    print(f"\nJupyterLab session with a demo llama.cpp server and a chat: {memory}")
    # Binder gives a session ~2 GB: JupyterLab, its proxy, the kernel with servekit's widgets and the demo server
    assert memory["llama-server"] > 0 and memory["total_mb"] < 2048, memory


def _memory_of_tree(pid: int) -> dict:
    """Proportional set size (shared pages split among their users) of ``pid`` and all its descendants, in MB:
    the total and per program (JupyterLab, the kernel, llama-server, servekit's watchdog)."""
    parent = psutil.Process(pid)
    by_program: dict[str, float] = {}
    for proc in [parent, *parent.children(recursive=True)]:
        try:
            pss = proc.memory_full_info().pss / 2**20
            command = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        name = ("llama-server" if "llama-server" in command or "_llamacpp_prebuilt" in command else
                "kernel" if "ipykernel" in command else "jupyterlab" if proc.pid == pid else
                "watchdog" if "_watchdog" in command else proc.name())
        by_program[name] = round(by_program.get(name, 0.0) + pss, 1)
    return {**by_program, "total_mb": round(sum(by_program.values()), 1)}


def stats_text(chat_text: str) -> str:
    return next((line for line in chat_text.splitlines() if "TTFT" in line), "")


def _open_notebook(page, lab: Lab, name: str) -> None:  # noqa: ANN001 - playwright's Page
    page.goto(f"{lab.base}/lab/tree/{name}?token={lab.token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=180_000)
    page.wait_for_timeout(2000)  # a kernel chooser, if any, opens now
    if page.locator(".jp-Dialog").count():  # a kernel chooser: take the default (this Python)
        page.locator(".jp-Dialog button.jp-mod-accept").first.click()


def _run_cell(page, index: int) -> None:  # noqa: ANN001
    """Run the notebook's ``index``-th code cell as a person does: click into it, Shift+Enter."""
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def _wait_until(page, check, timeout_s: float, why: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        page.wait_for_timeout(250)
    raise AssertionError(why)
