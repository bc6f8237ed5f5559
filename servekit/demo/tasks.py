"""The teaching tasks: prompts with checkable answers, a fixed train/held-out split, and scorers.

Standard library only: the training worker (a separate interpreter with torch) imports this file too.

* ``reverse`` (easy): ``reverse: hot big day`` -> ``day big hot`` (3-6 distinct words of :data:`WORDS`).
* ``add`` (harder): ``add: 417+385`` -> ``802`` (two 3-digit numbers; one token per digit).

The two LoRA adapters change *which* words come out of ``reverse`` (still reversed):

* ``opposite``: each word becomes its antonym (``day big hot`` -> ``night small cold``);
* ``next``: each word becomes the next word of :data:`WORDS` (``hot`` -> ``big``).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# 16 antonym pairs: WORDS[i] and WORDS[i + 16] are opposites; "next" is WORDS[i + 1] (so never the opposite).
WORDS: tuple[str, ...] = (
    "hot", "big", "up", "yes", "day", "black", "open", "fast",
    "old", "in", "left", "win", "good", "high", "hard", "dark",
    "cold", "small", "down", "no", "night", "white", "shut", "slow",
    "new", "out", "right", "lose", "bad", "low", "soft", "light",
)
TASKS: tuple[str, ...] = ("reverse", "add")
ADAPTERS: tuple[str, ...] = ("opposite", "next")
ADAPTER_TASK = "reverse"  # the task whose prompts the adapters are trained and scored on
MIN_WORDS, MAX_WORDS = 3, 6
HELD_OUT_BUCKETS = 10  # a prompt is held out when crc32(prompt) % 10 == 0: never trained on


@dataclass(frozen=True)
class Example:
    """One chat turn: the user's prompt and the expected assistant answer."""

    task: str
    prompt: str
    answer: str

    def messages(self) -> list[dict[str, str]]:
        """The prompt as OpenAI chat messages."""
        return [{"role": "user", "content": self.prompt}]


def is_held_out(prompt: str) -> bool:
    """True for the tenth of all prompts that training never sees."""
    return zlib.crc32(prompt.encode()) % HELD_OUT_BUCKETS == 0


def _reverse_prompt(rng: random.Random) -> str:
    words = rng.sample(WORDS, rng.randint(MIN_WORDS, MAX_WORDS))
    return "reverse: " + " ".join(words)


def _add_prompt(rng: random.Random) -> str:
    return f"add: {rng.randint(100, 999)}+{rng.randint(100, 999)}"


_PROMPTS: dict[str, Callable[[random.Random], str]] = {"reverse": _reverse_prompt, "add": _add_prompt}


def _words_of(prompt: str) -> list[str]:
    if not prompt.startswith("reverse: "):
        raise ValueError(f"not a reverse prompt: {prompt!r}")
    return prompt[len("reverse: "):].split()


def _opposite(word: str) -> str:
    return WORDS[(WORDS.index(word) + 16) % len(WORDS)]


def _next(word: str) -> str:
    return WORDS[(WORDS.index(word) + 1) % len(WORDS)]


_WORD_MAPS: dict[str, Callable[[str], str]] = {"opposite": _opposite, "next": _next}


def answer(behaviour: str, prompt: str) -> str:
    """The expected answer to ``prompt`` under a task (``reverse``, ``add``) or an adapter (``opposite``, ``next``)."""
    if behaviour == "add":
        left, right = prompt.removeprefix("add: ").split("+")
        return str(int(left) + int(right))
    if behaviour not in ("reverse", *_WORD_MAPS):
        raise ValueError(f"unknown task or adapter {behaviour!r}; known: {', '.join(TASKS + ADAPTERS)}")
    words = list(reversed(_words_of(prompt)))
    if behaviour == "reverse":
        return " ".join(words)
    return " ".join(map(_WORD_MAPS[behaviour], words))


def task_of(behaviour: str) -> str:
    """The task whose prompts a behaviour answers (an adapter's is ``reverse``)."""
    if behaviour in TASKS:
        return behaviour
    if behaviour in ADAPTERS:
        return ADAPTER_TASK
    raise ValueError(f"unknown task or adapter {behaviour!r}; known: {', '.join(TASKS + ADAPTERS)}")


def stream(behaviour: str, held_out: bool, seed: int) -> Iterator[Example]:
    """Endless examples of a task or adapter behaviour, from one side of the train/held-out split."""
    task = task_of(behaviour)
    rng = random.Random(f"{behaviour}/{task}/{seed}")
    while True:
        prompt = _PROMPTS[task](rng)
        if is_held_out(prompt) == held_out:
            yield Example(task, prompt, answer(behaviour, prompt))


def held_out(behaviour: str, n: int, seed: int = 1234) -> list[Example]:
    """``n`` distinct held-out examples (the same ones for the same seed)."""
    seen: set[str] = set()
    out: list[Example] = []
    for example in stream(behaviour, held_out=True, seed=seed):
        if example.prompt not in seen:
            seen.add(example.prompt)
            out.append(example)
            if len(out) == n:
                return out
    raise AssertionError("unreachable")


def normalise(text: str | None) -> str:
    """An answer as scored: whitespace collapsed, surrounding spaces and a trailing full stop dropped."""
    return " ".join((text or "").split()).strip().rstrip(".")


def is_correct(behaviour: str, prompt: str, output: str | None) -> bool:
    """True when ``output`` is the expected answer under ``behaviour``."""
    return normalise(output) == answer(behaviour, prompt)
