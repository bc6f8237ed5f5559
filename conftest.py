"""The notebooks, as the test command runs them (nbval), are kept with what they showed — display updates applied
as a frontend applies them — in .ci/artifacts/notebooks/NAME.ipynb, so the docs site renders the tutorials with the
outputs of a real run (tests/integration/test_docs_site_outputs.py builds it, after the notebooks)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXECUTED = Path(__file__).resolve().parent / ".ci" / "artifacts" / "notebooks"


class ExecutedNotebook:
    """A copy of one notebook that gains each cell's outputs as nbval runs it."""

    def __init__(self, notebook_file: Any) -> None:
        self.source = notebook_file.nb
        self.copy = copy.deepcopy(notebook_file.nb)
        for cell in self.copy.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        self.path = EXECUTED / Path(str(notebook_file.fspath)).name
        self.count = 0
        self._running: str | None = None  # msg_id of the cell being run
        self._shown_ids: list[str | None] = []  # display ids of that cell's displays, in order
        self._by_display_id: dict[str, list[Any]] = {}  # outputs shown with a display id
        self._updates: dict[str, dict] = {}  # the latest update of each display id
        self._read = self._watch(notebook_file)
        self._last_cell = max((i for i, c in enumerate(self.source.cells) if c.cell_type == "code"), default=-1)

    def _watch(self, notebook_file: Any) -> Callable[..., Any]:
        read = notebook_file.get_kernel_message

        def get_kernel_message(*args: Any, **kwargs: Any) -> Any:
            message = read(*args, **kwargs)
            self._see(message)
            return message

        notebook_file.get_kernel_message = get_kernel_message
        return get_kernel_message

    def _see(self, message: dict) -> None:
        kind, content = message["msg_type"], message["content"]
        parent = message.get("parent_header", {}).get("msg_id")
        display_id = (content.get("transient") or {}).get("display_id") if isinstance(content, dict) else None
        if kind == "execute_input":
            self._running, self._shown_ids = parent, []
        elif kind in ("display_data", "execute_result") and parent == self._running:
            self._shown_ids.append(display_id)
        elif kind == "update_display_data" and display_id:
            self._updates[display_id] = content
            for output in self._by_display_id.get(display_id, []):
                _update(output, content)

    def record(self, item: Any) -> None:
        """The outputs nbval read for ``item``'s cell, into the copy; the copy is written out."""
        index = next(i for i, cell in enumerate(self.source.cells) if cell is item.cell)
        outputs = self._outputs(item)
        if index == self._last_cell:
            self._drain()
        self.count += 1
        cell = self.copy.cells[index]
        cell.outputs, cell.execution_count = outputs, self.count
        for output in outputs:
            if output.get("output_type") == "execute_result":
                output["execution_count"] = self.count
        self.write()

    def _outputs(self, item: Any) -> list[Any]:
        """The cell's outputs as a page can show them: displays tied to their ids (and updated), stale widget
        views left out."""
        outputs = copy.deepcopy(list(getattr(item, "test_outputs", None) or []))
        shown = iter(self._shown_ids)
        for output in outputs:
            if output.get("output_type") in ("display_data", "execute_result"):
                display_id = next(shown, None)
                if display_id:
                    self._by_display_id.setdefault(display_id, []).append(output)
                    if display_id in self._updates:  # updated while its cell still ran
                        _update(output, self._updates[display_id])
        return [output for output in outputs if not _widget_only(output)]

    def _drain(self, seconds: float = 3.0) -> None:
        """Display updates that come after the last cell (a panel's final copy once its server has stopped)."""
        import time
        from queue import Empty

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._read(timeout=max(0.1, deadline - time.monotonic()))
            except Empty:
                return

    def write(self) -> None:
        for cell in self.copy.cells:
            for output in cell.get("outputs", []):
                _with_plotly_html(output)
        import nbformat

        EXECUTED.mkdir(parents=True, exist_ok=True)
        nbformat.write(self.copy, str(self.path))


def _widget_only(output: Any) -> bool:
    """A widget view whose only other form is its first repr (a progress bar's "0%"): its state lives in the
    kernel, not in the output, so a page would show that stale text. servekit's widgets add a static HTML copy."""
    data = output.get("data") or {}
    return "application/vnd.jupyter.widget-view+json" in data and not set(data) - {
        "application/vnd.jupyter.widget-view+json", "text/plain"}


def _update(output: Any, content: dict) -> None:
    output["data"], output["metadata"] = copy.deepcopy(content["data"]), copy.deepcopy(content.get("metadata", {}))


def _with_plotly_html(output: Any) -> None:
    """A plotly figure also as HTML (a div and its script; plotly.js itself comes from the page: docs/hooks.py), as
    plotly's notebook renderer writes it: the docs' notebook converter does not draw plotly's own mime type."""
    data = output.get("data") or {}
    figure = data.get("application/vnd.plotly.v1+json")
    if figure is None or "text/html" in data:
        return
    import plotly.io

    data["text/html"] = plotly.io.to_html(figure, include_plotlyjs=False, full_html=False,
                                          config={"displaylogo": False, "responsive": True})


_EXECUTED: dict[int, ExecutedNotebook] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    notebook_file = item.parent if type(item).__name__ == "IPyNbCell" else None
    if notebook_file is not None and id(notebook_file) not in _EXECUTED:
        if not _EXECUTED:  # the first notebook of this session: no copies of an earlier run stay beside it
            shutil.rmtree(EXECUTED, ignore_errors=True)
        _EXECUTED[id(notebook_file)] = ExecutedNotebook(notebook_file)
    yield
    if notebook_file is not None:
        _EXECUTED[id(notebook_file)].record(item)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``after_notebooks`` run last, after the notebooks (which the test command lists after tests/)."""
    items.sort(key=lambda item: item.get_closest_marker("after_notebooks") is not None)


@pytest.fixture
def executed_notebooks() -> list[Path]:
    """The notebooks this test session ran, with their outputs (written as they ran)."""
    return sorted(notebook.path for notebook in _EXECUTED.values())
