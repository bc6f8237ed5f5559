"""What the load generator sends: synthetic prompts of given token lengths, a list of prompts, a file of
chat conversations, or the demo tasks' prompts.

A workload is prepared once against the server (synthetic prompts are measured with the server's own
tokenizer endpoint, where the engine has one), then hands out one :class:`Prompt` per request index.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import InvalidBenchmark

CountTokens = Callable[[str, bool], Awaitable["int | None"]]  # (text, add_special) -> count, None: no tokenizer
CHAT, COMPLETIONS = "chat", "completions"
DEFAULT_DATASET_OUTPUT = 256  # max_tokens for a conversation whose reply length is unknown
MAX_ADJUSTMENTS = 8

# Words most tokenizers hold as one token each (the demo model's own words first): synthetic prompts are
# random sequences of them, so no two prompts share a long prefix and prefix caches do not flatter a run.
WORD_POOL: tuple[str, ...] = (
    "hot", "big", "up", "yes", "day", "black", "open", "fast", "old", "in", "left", "win", "good", "high",
    "hard", "dark", "cold", "small", "down", "no", "night", "white", "shut", "slow", "new", "out", "right",
    "lose", "bad", "low", "soft", "light", "the", "of", "and", "to", "a", "is", "for", "on", "with", "as",
    "at", "by", "from", "this", "that", "it", "are", "was", "be", "have", "one", "all", "can", "if", "will",
    "time", "year", "way", "man", "world", "life", "hand", "part", "place", "case", "week", "work", "point",
    "home", "water", "room", "money", "story", "fact", "month", "book", "eye", "job", "word", "side", "kind",
    "head", "house", "area", "team", "game", "car", "city", "name", "line", "end", "door", "law", "war",
)


@dataclass(frozen=True)
class Prompt:
    """One request's input: chat ``messages`` or a completion ``text``, and its output budget."""

    messages: tuple[dict[str, Any], ...] | None = None
    text: str | None = None
    max_tokens: int | None = None
    expected_prompt_tokens: int | None = None  # the prompt's length as the server reports it, where known
    extra: dict[str, Any] = field(default_factory=dict)  # further request fields (e.g. tools)


class Workload(Protocol):
    """Anything that hands out prompts: ``api`` is ``"chat"`` or ``"completions"``."""

    api: str
    exact_output: bool  # ask the server for exactly max_tokens (ignore_eos/min_tokens where it can)

    async def prepare(self, count_tokens: CountTokens, requests: int) -> None: ...

    def prompt(self, index: int) -> Prompt: ...

    def describe(self) -> dict[str, Any]: ...


def _check_api(api: str) -> str:
    if api not in (CHAT, COMPLETIONS):
        raise InvalidBenchmark(f"api must be 'chat' or 'completions', not {api!r}.")
    return api


def _check_positive(name: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise InvalidBenchmark(f"{name} must be a positive whole number of tokens, got {value!r}.")
    return value


# -- synthetic prompts of a given length -------------------------------------------------------
class Synthetic:
    """Random-word prompts of ``input_tokens`` tokens asking for exactly ``output_tokens`` tokens.

    On the completions API (the default) ``input_tokens`` is the prompt length as the server counts it
    (special tokens such as BOS included) and is checked with the server's tokenizer; on the chat API it is
    the length of the message text (the chat template adds its own tokens). Without a tokenizer endpoint
    one word is taken for one token and the records show the real length (``prompt_tokens``).
    """

    def __init__(self, input_tokens: int = 128, output_tokens: int = 128, *, api: str = COMPLETIONS,
                 distinct: int = 256, seed: int = 0, exact_output: bool = True):
        self.input_tokens: int = _check_positive("input_tokens", input_tokens) or 1
        self.output_tokens: int = _check_positive("output_tokens", output_tokens) or 1
        self.api = _check_api(api)
        self.distinct = max(1, int(distinct))
        self.seed = seed
        self.exact_output = exact_output
        self._prompts: list[Prompt] = []

    async def prepare(self, count_tokens: CountTokens, requests: int) -> None:
        """Measure the prompts on the server (once: a sweep reuses them on the same server)."""
        if self._prompts and len(self._prompts) >= min(self.distinct, requests):
            return
        rng = random.Random(self.seed)
        add_special = self.api == COMPLETIONS
        pool = await _single_token_words(count_tokens, add_special)
        base = await count_tokens("", add_special) if pool is not None else None
        words = list(pool or WORD_POOL)
        self._prompts = []
        for _ in range(max(1, min(self.distinct, requests))):
            text, length = await _text_of_length(self.input_tokens, words, base or 0, rng, count_tokens, add_special)
            expected = length if (length is not None and add_special) else None
            self._prompts.append(self._make(text, expected))

    def _make(self, text: str, expected: int | None) -> Prompt:
        if self.api == CHAT:
            return Prompt(messages=({"role": "user", "content": text},), max_tokens=self.output_tokens)
        return Prompt(text=text, max_tokens=self.output_tokens, expected_prompt_tokens=expected)

    def prompt(self, index: int) -> Prompt:
        if not self._prompts:
            raise InvalidBenchmark("The workload was not prepared: run it through servekit.bench.run().")
        return self._prompts[index % len(self._prompts)]

    def describe(self) -> dict[str, Any]:
        return {"workload": "synthetic", "api": self.api, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "exact_output": self.exact_output}


async def _single_token_words(count_tokens: CountTokens, add_special: bool) -> list[str] | None:
    """The words of :data:`WORD_POOL` that are one token each after a space; None without a tokenizer."""
    base = await count_tokens("", add_special)
    if base is None:
        return None
    whole = await count_tokens(" ".join(WORD_POOL), add_special)
    if whole is not None and whole - base == len(WORD_POOL):
        return list(WORD_POOL)
    anchor = await count_tokens("x", add_special) or 0
    single = []
    for word in WORD_POOL:
        count = await count_tokens("x " + word, add_special)
        if count is not None and count - anchor == 1:
            single.append(word)
    return single if len(single) >= 8 else list(WORD_POOL)


async def _text_of_length(target: int, words: Sequence[str], base: int, rng: random.Random,
                          count_tokens: CountTokens, add_special: bool) -> tuple[str, int | None]:
    """Random words that tokenize to ``target`` tokens (special tokens included when ``add_special``).

    Starts from one word per token, then adds or drops words until the server's count matches (a few
    rounds at most); returns the text and its measured length (None without a tokenizer).
    """
    chosen = [rng.choice(words) for _ in range(max(1, target - base))]
    length = None
    for _ in range(MAX_ADJUSTMENTS):
        length = await count_tokens(" ".join(chosen), add_special)
        if length is None or length == target:
            break
        if length < target:
            chosen += [rng.choice(words) for _ in range(target - length)]
        elif len(chosen) > 1:
            del chosen[max(1, len(chosen) - (length - target)):]
        else:
            break
    return " ".join(chosen), length


# -- fixed prompts, conversation files, the demo tasks -------------------------------------------
class Prompts:
    """A list of prompts (strings, or lists of chat messages), sent in turn."""

    def __init__(self, prompts: Sequence[str | Sequence[dict[str, Any]]], output_tokens: int | None = None, *,
                 api: str = CHAT, exact_output: bool | None = None, name: str = "prompts"):
        if isinstance(prompts, (str, bytes)) or not prompts:
            raise InvalidBenchmark("prompts must be a non-empty list of strings or of chat message lists.")
        self.api = _check_api(api)
        self.output_tokens = _check_positive("output_tokens", output_tokens)
        self.exact_output = bool(output_tokens) if exact_output is None else exact_output
        self.name = name
        self._prompts = [self._make(p) for p in prompts]

    def _make(self, item: str | Sequence[dict[str, Any]]) -> Prompt:
        if isinstance(item, str):
            if self.api == CHAT:
                return Prompt(messages=({"role": "user", "content": item},), max_tokens=self.output_tokens)
            return Prompt(text=item, max_tokens=self.output_tokens)
        if self.api != CHAT:
            raise InvalidBenchmark("Chat message lists need api='chat'.")
        return Prompt(messages=tuple(dict(m) for m in item), max_tokens=self.output_tokens)

    async def prepare(self, count_tokens: CountTokens, requests: int) -> None:
        return None

    def prompt(self, index: int) -> Prompt:
        return self._prompts[index % len(self._prompts)]

    def __len__(self) -> int:
        return len(self._prompts)

    def describe(self) -> dict[str, Any]:
        return {"workload": self.name, "api": self.api, "prompts": len(self._prompts),
                "output_tokens": self.output_tokens, "exact_output": self.exact_output}


class Conversations(Prompts):
    """Chat conversations from a file: JSONL or JSON, OpenAI ``messages`` or ShareGPT ``conversations``.

    Each conversation is sent up to its last user turn. The reply that follows it, if the file has one,
    sets the output budget when ``output_tokens`` is not given (measured with the server's tokenizer
    where it has one; else :data:`DEFAULT_DATASET_OUTPUT` tokens, stopping where the model stops).
    """

    def __init__(self, path: str | Path, output_tokens: int | None = None, *, limit: int | None = None,
                 shuffle: bool = False, seed: int = 0):
        self.path = Path(path).expanduser()
        items = read_conversations(self.path)
        if shuffle:
            random.Random(seed).shuffle(items)
        if limit is not None:
            items = items[:limit]
        super().__init__([messages for messages, _ in items], output_tokens, api=CHAT, name="conversations")
        self._replies = [reply for _, reply in items]

    async def prepare(self, count_tokens: CountTokens, requests: int) -> None:
        if self.output_tokens is not None:
            return
        for i in range(min(requests, len(self._prompts))):
            reply = self._replies[i]
            length = await count_tokens(reply, False) if reply else None
            budget = length if length else DEFAULT_DATASET_OUTPUT
            self._prompts[i] = Prompt(messages=self._prompts[i].messages, max_tokens=budget)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": str(self.path)}


def read_conversations(path: Path) -> list[tuple[list[dict[str, Any]], str | None]]:
    """(messages up to the last user turn, the reply after it or None) for each conversation in ``path``."""
    if not path.is_file():
        raise InvalidBenchmark(f"Dataset {path} is not a file: give a JSONL or JSON file of conversations.")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        rows = data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise InvalidBenchmark(f"{path}: neither JSON nor JSON Lines ({exc}).") from None
    out = [conv for conv in (_conversation(row) for row in rows) if conv is not None]
    if not out:
        raise InvalidBenchmark(f"{path} holds no usable conversation: each needs 'messages' (OpenAI) or "
                               "'conversations' (ShareGPT) with at least one user turn.")
    return out


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "system": "system"}


def _conversation(row: Any) -> tuple[list[dict[str, Any]], str | None] | None:
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("messages"), list):
        turns = [{"role": m.get("role"), "content": m.get("content")} for m in row["messages"] if isinstance(m, dict)]
    elif isinstance(row.get("conversations"), list):
        turns = [{"role": _SHAREGPT_ROLES.get(str(m.get("from", "")).lower()), "content": m.get("value")}
                 for m in row["conversations"] if isinstance(m, dict)]
    else:
        return None
    turns = [t for t in turns if t["role"] and isinstance(t["content"], str)]
    last_user = max((i for i, t in enumerate(turns) if t["role"] == "user"), default=None)
    if last_user is None:
        return None
    reply = turns[last_user + 1]["content"] if last_user + 1 < len(turns) else None
    return turns[: last_user + 1], reply


def demo_tasks(task: str | Sequence[str] | None = None, n: int = 200, output_tokens: int | None = None,
               seed: int = 1234) -> Prompts:
    """The demo tasks' held-out prompts (``reverse``, ``add``; both when None) as a chat workload."""
    from ..demo import tasks as demo

    names = list(demo.TASKS) if task is None else [task] if isinstance(task, str) else list(task)
    unknown = [t for t in names if t not in demo.TASKS]
    if unknown:
        raise InvalidBenchmark(f"Unknown demo task {unknown[0]!r}: choose from {', '.join(demo.TASKS)}.")
    per_task = [demo.held_out(t, max(1, n // len(names)), seed) for t in names]
    examples = [ex for group in zip(*per_task) for ex in group]  # interleaved: reverse, add, reverse, ...
    return Prompts([ex.messages() for ex in examples], output_tokens or 16, exact_output=bool(output_tokens),
                   name="demo-tasks")
