"""Score a running server on the demo tasks through its OpenAI API, and tabulate quantization's cost.

Accuracy is exact-match on held-out prompts. Confidence is the mean gap, in nats, between the log-probs of
the best and the second-best token at each answer position (from the server's ``top_logprobs``): a
quantized model can keep its answers while growing less sure of them, and this shows it.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import tasks

if TYPE_CHECKING:
    import pandas

    from ..server import Server

MAX_TOKENS = 16
TOOL_MAX_TOKENS = 48  # a tool call is about 30 tokens


@dataclass
class Answer:
    """One prompt, the server's answer, and the per-token top-1/top-2 log-prob gaps."""

    prompt: str
    expected: str
    output: str
    margins: list[float] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@dataclass
class TaskScore:
    """Scores of one task: accuracy, confidence, and how often each adapter's behaviour shows."""

    task: str
    answers: list[Answer]

    @property
    def n(self) -> int:
        return len(self.answers)

    @property
    def accuracy(self) -> float:
        """Share of exactly right answers."""
        return sum(tasks.score(self.task, a.expected, a.output) for a in self.answers) / max(self.n, 1)

    def share(self, behaviour: str) -> float:
        """Share of answers that show ``behaviour`` (a task or an adapter: ``opposite``, ``next``)."""
        if tasks.task_of(behaviour) != self.task:
            raise ValueError(f"{behaviour!r} answers {tasks.task_of(behaviour)!r} prompts, not {self.task!r} ones")
        return sum(tasks.is_correct(behaviour, a.prompt, a.output) for a in self.answers) / max(self.n, 1)

    @property
    def margin(self) -> float | None:
        """Mean top-1 minus top-2 log-prob over all answer tokens (nats); None without log-probs."""
        gaps = [g for a in self.answers for g in a.margins]
        return sum(gaps) / len(gaps) if gaps else None

    @property
    def mean_logprob(self) -> float | None:
        """Mean log-prob of the chosen tokens (nats; 0 is certain)."""
        values = [v for a in self.answers for v in a.logprobs]
        return sum(values) / len(values) if values else None

    def failures(self, k: int = 5) -> list[Answer]:
        """A few wrong answers, to look at."""
        return [a for a in self.answers if not tasks.score(self.task, a.expected, a.output)][:k]


@dataclass
class EvalResult:
    """What :func:`evaluate` measured. ``accuracy`` is the mean over the tasks scored."""

    model: str
    adapter: str | None
    scores: dict[str, TaskScore]

    @property
    def accuracy(self) -> float:
        return sum(s.accuracy for s in self.scores.values()) / len(self.scores)

    @property
    def adapter_share(self) -> float | None:
        """Share of answers showing the applied adapter's behaviour (None when no adapter was applied)."""
        return self.share(self.adapter) if self.adapter else None

    def share(self, behaviour: str) -> float:
        """Share of answers showing an adapter's behaviour, applied or not."""
        return self.scores[tasks.task_of(behaviour)].share(behaviour)

    @property
    def margin(self) -> float | None:
        margins = [s.margin for s in self.scores.values() if s.margin is not None]
        return sum(margins) / len(margins) if margins else None

    def __getitem__(self, task: str) -> TaskScore:
        return self.scores[task]

    def __str__(self) -> str:
        parts = [f"{t} {s.accuracy:.0%}" for t, s in self.scores.items()]
        if self.adapter:
            parts.append(f"adapter {self.adapter!r} shows in {self.adapter_share:.0%}")
        if self.margin is not None:
            parts.append(f"confidence margin {self.margin:.2f}")
        return f"{self.model}: " + ", ".join(parts)

    def _repr_html_(self) -> str:
        return f"<code>{html.escape(str(self))}</code>"


def evaluate(
    server: Server,
    n: int = 100,
    adapter: str | None = None,
    task: str | Sequence[str] | None = None,
    seed: int = 1234,
    logprobs: bool = True,
    concurrency: int = 4,
) -> EvalResult:
    """Send ``n`` held-out prompts per task through ``server``'s chat API and score the answers.

    ``adapter``: apply this LoRA adapter (``opposite`` or ``next``) to every request; the result's
    ``adapter_share`` is then the share of answers showing its behaviour. ``task``: ``reverse``, ``add``
    or both (default: both, or ``reverse`` with an adapter), or a tool task — ``tool_call`` (the reply's
    ``tool_calls``) or ``tool_answer`` (the answer after the tool's result) — which needs a server started
    with ``tool_parser=`` (``"hermes"`` for vLLM and llama.cpp, ``"qwen25"`` for SGLang).
    """
    if adapter is not None and adapter not in tasks.ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}; the demo adapters are {', '.join(tasks.ADAPTERS)}")
    names = _task_list(task, adapter)
    options = request_options(server, adapter)
    client = server.client(max_retries=2, timeout=120)

    def ask(example: tasks.Example) -> Answer:
        return _ask(client, options, example, logprobs)

    scores: dict[str, TaskScore] = {}
    with client, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:  # closing frees the server's connections
        for name in names:
            scores[name] = TaskScore(name, list(pool.map(ask, tasks.held_out(name, n, seed=seed))))
    return EvalResult(model=str(options["model"]), adapter=adapter, scores=scores)


def _task_list(task: str | Sequence[str] | None, adapter: str | None) -> list[str]:
    if task is None:
        return [tasks.ADAPTER_TASK] if adapter else list(tasks.TASKS)
    names = [task] if isinstance(task, str) else list(task)
    for name in names:
        if name not in tasks.ALL_TASKS:
            raise ValueError(f"unknown task {name!r}; the demo tasks are {', '.join(tasks.ALL_TASKS)}")
    return names


def request_options(server: Server, adapter: str | None) -> dict[str, Any]:
    """``model`` and ``extra_body`` that make a request use ``adapter`` (None: the base model)."""
    try:
        return server.lora_request_options(adapter)
    except ValueError as exc:
        raise ValueError(f"{exc}; serve demo+lora-{adapter} or demo+loras to load the demo adapters") from None


def _ask(client: Any, options: dict[str, Any], example: tasks.Example, logprobs: bool) -> Answer:
    # left out when off: SGLang refuses an explicit ``"logprobs": null`` (400, "Input should be a valid boolean")
    extra: dict[str, Any] = {"logprobs": True, "top_logprobs": 2} if logprobs else {}
    tools = example.tools()
    if tools:
        extra["tools"] = tools
    reply = client.chat.completions.create(
        model=options["model"], messages=example.messages(), temperature=0.0,
        max_tokens=TOOL_MAX_TOKENS if tools else MAX_TOKENS,
        extra_body=options.get("extra_body") or None, **extra,
    )
    choice = reply.choices[0]
    answer = Answer(example.prompt, example.answer, reply_text(choice.message))
    content = getattr(choice.logprobs, "content", None) or []
    for token in content:
        top = sorted((t.logprob for t in (token.top_logprobs or [])), reverse=True)
        if len(top) >= 2:
            answer.margins.append(top[0] - top[1])
        answer.logprobs.append(token.logprob)
    return answer


def reply_text(message: Any) -> str:
    """A reply as text: its ``tool_calls`` written back in the model's own format, else its content."""
    calls = getattr(message, "tool_calls", None) or []
    if not calls:
        return message.content or ""
    texts = []
    for call in calls:
        try:
            texts.append(tasks.format_tool_call(call.function.name, json.loads(call.function.arguments)))
        except ValueError:  # arguments that are not JSON: kept as they came, so the answer scores wrong
            texts.append(f"<tool_call>\n{call.function.name} {call.function.arguments}\n</tool_call>")
    return "\n".join(texts)


@dataclass
class ToolChat:
    """One agent loop: the messages exchanged, the tool calls made, and the final answer."""

    messages: list[dict[str, Any]]
    calls: list[tuple[str, dict[str, Any]]]
    results: list[str]
    answer: str


def chat_with_tools(server: Server, prompt: str, max_rounds: int = 3, **create: Any) -> ToolChat:
    """Ask ``prompt`` with the demo tools; run each call the model makes (:func:`tasks.run_tool`) and send its
    result back, until the model answers in text — the loop of an agent, for real, on a tiny model.

    ``create``: more arguments for ``chat.completions.create`` (``extra_body=…``).
    """
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    calls: list[tuple[str, dict[str, Any]]] = []
    results: list[str] = []
    with server.client(max_retries=2, timeout=120) as client:
        for _ in range(max_rounds):
            reply = client.chat.completions.create(model=server.model, messages=messages, tools=list(tasks.TOOLS),
                                                   temperature=0.0, max_tokens=TOOL_MAX_TOKENS, **create)
            message = reply.choices[0].message
            if not message.tool_calls:
                return ToolChat(messages, calls, results, message.content or "")
            messages.append({"role": "assistant", "content": message.content or "",
                             "tool_calls": [c.model_dump(include={"id", "type", "function"})
                                            for c in message.tool_calls]})
            for call in message.tool_calls:
                arguments = json.loads(call.function.arguments)
                result = tasks.run_tool(call.function.name, arguments)
                calls.append((call.function.name, arguments))
                results.append(result)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return ToolChat(messages, calls, results, "")


# -- the quantization table ----------------------------------------------------------------------
@dataclass
class QuantRow:
    """One quantization type: file size, load time, decode speed, accuracy per task, confidence."""

    quant: str
    size_mb: float
    accuracy: dict[str, float]
    margin: dict[str, float | None]
    result: EvalResult
    changed: dict[str, float | None] = field(default_factory=dict)  # share of answers unlike the first row's
    load_s: float | None = None  # from serve() to the server answering
    tokens_per_s: float | None = None  # one stream's output tokens per second (servekit.bench, exact lengths)


@dataclass
class QuantTable:
    """Accuracy and confidence per quantization type (a notebook shows it as a table)."""

    rows: list[QuantRow]

    def row(self, quant: str) -> QuantRow:
        return next(r for r in self.rows if r.quant == quant)

    def breaks_at(self, drop: float = 0.05) -> str | None:
        """The largest quantization whose accuracy on some task is ``drop`` (5 points) or more below the
        first row's — where quality breaks; None when every row holds."""
        if not self.rows:
            return None
        first = self.rows[0].accuracy
        for row in self.rows[1:]:
            if any(first[t] - row.accuracy[t] >= drop for t in first):
                return row.quant
        return None

    def to_frame(self) -> pandas.DataFrame:
        """One row per quantization: ``MB``, ``load_s``, ``tokens_per_s``, then ``<task> acc``,
        ``<task> margin`` and ``<task> changed`` (share of answers unlike the first row's) per task."""
        import pandas as pd

        rows = []
        for r in self.rows:
            row: dict[str, Any] = {"quant": r.quant, "MB": r.size_mb, "load_s": r.load_s,
                                   "tokens_per_s": r.tokens_per_s}
            for t in r.accuracy:
                row[f"{t} acc"] = r.accuracy[t]
                row[f"{t} margin"] = r.margin.get(t)
                row[f"{t} changed"] = r.changed.get(t)
            rows.append(row)
        return pd.DataFrame(rows).set_index("quant")

    def chart(self) -> Any:
        """A plotly figure: file size as bars; accuracy and confidence margin per task as lines, by quant type."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        quants = [r.quant for r in self.rows]
        fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy (lines) and file size (bars)",
                                                            "confidence margin (nats)"),
                            specs=[[{"secondary_y": True}, {}]])
        fig.add_bar(x=quants, y=[r.size_mb for r in self.rows], name="MB", marker_color="#d0d7e1",
                    row=1, col=1, secondary_y=True)
        for t in (self.rows[0].accuracy if self.rows else {}):
            fig.add_scatter(x=quants, y=[100 * r.accuracy[t] for r in self.rows], name=f"{t} accuracy %",
                            mode="lines+markers", row=1, col=1)
            fig.add_scatter(x=quants, y=[r.margin.get(t) for r in self.rows], name=f"{t} margin",
                            mode="lines+markers", line={"dash": "dot"}, row=1, col=2)
        broken = self.breaks_at()
        if broken is not None:
            fig.add_vline(x=quants.index(broken), line_dash="dash", line_color="#c0392b", row=1, col=1)
            fig.add_annotation(x=broken, y=50, text="quality breaks", showarrow=False, xanchor="right", xshift=-4,
                               font={"color": "#c0392b"}, row=1, col=1)
        fig.update_yaxes(title_text="accuracy %", range=[0, 105], row=1, col=1, secondary_y=False)
        fig.update_yaxes(title_text="MB", row=1, col=1, secondary_y=True, showgrid=False)
        fig.update_layout(height=380, margin={"t": 40, "b": 30, "l": 50, "r": 20}, legend={"orientation": "h"})
        return fig

    def _columns(self) -> tuple[list[str], list[list[str]]]:
        task_names = list(self.rows[0].accuracy) if self.rows else []
        head = (["quant", "MB"] + [f"{t} acc" for t in task_names] + [f"{t} margin" for t in task_names]
                + [f"{t} changed" for t in task_names])
        body = [
            [r.quant, f"{r.size_mb:.2f}"] + [f"{r.accuracy[t]:.1%}" for t in task_names]
            + [_fmt(r.margin.get(t), "{:.2f}") for t in task_names]
            + [_fmt(r.changed.get(t), "{:.1%}") for t in task_names]
            for r in self.rows
        ]
        return head, body

    def __str__(self) -> str:
        head, body = self._columns()
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in [head, *body])

    def _repr_html_(self) -> str:
        head, body = self._columns()
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in body)
        note = ("<p>margin: mean gap between the best and second-best token's log-prob (nats) — lower means "
                f"less sure. changed: share of answers that differ from {html.escape(self.rows[0].quant)}'s.</p>"
                if self.rows else "")
        return f"<table><thead><tr>{cells}</tr></thead><tbody>{rows}</tbody></table>{note}"


def quant_table(
    quants: Iterable[str] | None = None,
    n: int = 100,
    task: str | Sequence[str] | None = None,
    engine: str = "llamacpp",
    progress: Callable[[str], None] | None = print,
    speed_requests: int = 8,
    **serve_options: Any,
) -> QuantTable:
    """Serve ``demo`` (F16) and each ``demo:QUANT`` in turn: its load time, its decode speed (one stream,
    ``speed_requests`` requests of 64 tokens; 0 leaves it out) and its accuracy and confidence on ``n``
    held-out prompts per task — the cost of each bit width.

    ``quants`` default to the engine's: the GGUF ladder for llama.cpp, ``W8A8`` for vLLM (whose first row,
    ``unquantized``, is the HF folder served in vLLM's default dtype)."""
    from ..engines import get_engine
    from ..server import serve
    from . import HF_QUANT_TYPES, QUANT_TYPES, resolve_model

    fmt = get_engine(engine).model_format
    rows: list[QuantRow] = []
    base = "F16" if fmt == "gguf" else "unquantized"
    for quant in [base, *(QUANT_TYPES if fmt == "gguf" else HF_QUANT_TYPES)] if quants is None else list(quants):
        name = "demo" if quant in ("F16", "unquantized") else f"demo:{quant}"
        found = resolve_model(name, fmt)
        size = _size_mb(found.path) if found is not None else 0.0
        started = time.perf_counter()
        with serve(engine, name, **{"parallel": 4, **serve_options}) as server:
            load_s = time.perf_counter() - started
            result = evaluate(server, n=n, task=task)
            speed = decode_speed(server, speed_requests) if speed_requests else None
        changed = {t: _changed(rows[0].result[t], score) for t, score in result.scores.items()} if rows else {}
        rows.append(QuantRow(quant, size, {t: s.accuracy for t, s in result.scores.items()},
                             {t: s.margin for t, s in result.scores.items()}, result, changed, load_s, speed))
        if progress:
            progress(f"{quant:>7}: {result}; loaded in {load_s:.1f} s"
                     + (f", {speed:.0f} tokens/s" if speed is not None else ""))
    return QuantTable(rows)


def _size_mb(path: Path) -> float:
    """A model's size: the GGUF file, or a folder's weight files (tokenizer and config left out)."""
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) / 1e6


def decode_speed(server: Server, requests: int = 8, output_tokens: int = 64) -> float:
    """One stream's output tokens per second: ``requests`` requests one after another, each ``output_tokens``
    long (exact where the engine can force the length), measured by servekit's load generator."""
    from .. import bench

    result = bench.run(server, concurrency=1, requests=requests, input_tokens=16, output_tokens=output_tokens,
                       progress=False, timeout=120)
    if result.summary["completed"] == 0:
        raise RuntimeError(f"no request completed while measuring decode speed: {result.summary['errors']}")
    return float(result.summary["output_throughput"])


def _changed(reference: TaskScore, score: TaskScore) -> float:
    """Share of prompts whose answer differs from the reference run's answer to the same prompt."""
    theirs = {a.prompt: tasks.normalise(a.output) for a in reference.answers}
    return sum(tasks.normalise(a.output) != theirs.get(a.prompt) for a in score.answers) / max(score.n, 1)


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)
