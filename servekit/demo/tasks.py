"""The teaching tasks: prompts with checkable answers, a fixed train/held-out split, and scorers.

Standard library only: the training worker (a separate interpreter with torch) imports this file too.

* ``reverse`` (easy): ``reverse: hot big day`` -> ``day big hot`` (3-6 distinct words of :data:`WORDS`).
* ``add`` (harder): ``add: 417+385`` -> ``802`` (two 3-digit numbers; one token per digit).

The two LoRA adapters change *which* words come out of ``reverse`` (still reversed):

* ``opposite``: each word becomes its antonym (``day big hot`` -> ``night small cold``);
* ``next``: each word becomes the next word of :data:`WORDS` (``hot`` -> ``big``).

Two tool tasks (:data:`TOOL_TASKS`) make an agent loop with the tools of :data:`TOOLS` (sent as ``tools=``):

* ``tool_call``: ``weather in paris today`` -> a Hermes-format call, the text
  ``<tool_call>\n{"name": "get_weather", "arguments": {"city": "paris", "day": "today"}}\n</tool_call>``,
  which vLLM (``hermes``), SGLang (``qwen25``) and llama.cpp (``--jinja``) return as ``tool_calls``;
* ``tool_answer``: the same conversation after the call and a ``tool`` message with its result ->
  ``today in paris it is sunny, 18 C`` (``add 417 and 385`` … ``802`` -> ``the answer is 802``).
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# 16 antonym pairs: WORDS[i] and WORDS[i + 16] are opposites; "next" is WORDS[i + 1] (so never the opposite).
WORDS: tuple[str, ...] = (
    "hot", "big", "up", "yes", "day", "black", "open", "fast",
    "old", "in", "left", "win", "good", "high", "hard", "dark",
    "cold", "small", "down", "no", "night", "white", "shut", "slow",
    "new", "out", "right", "lose", "bad", "low", "soft", "light",
)
TASKS: tuple[str, ...] = ("reverse", "add")  # plain chat tasks: evaluate() scores these by default
TOOL_TASKS: tuple[str, ...] = ("tool_call", "tool_answer")  # requests carry tools=TOOLS
ALL_TASKS: tuple[str, ...] = TASKS + TOOL_TASKS
ADAPTERS: tuple[str, ...] = ("opposite", "next")
ADAPTER_TASK = "reverse"  # the task whose prompts the adapters are trained and scored on
MIN_WORDS, MAX_WORDS = 3, 6
HELD_OUT_BUCKETS = 10  # a prompt is held out when crc32(prompt) % 10 == 0: never trained on

# -- the tools ------------------------------------------------------------------------------------
CITIES: tuple[str, ...] = (
    "paris", "london", "tokyo", "rome", "berlin", "madrid", "oslo", "lima",
    "cairo", "delhi", "dublin", "vienna", "prague", "lisbon", "seoul", "sydney",
    "athens", "boston", "dallas", "denver", "miami", "munich", "nairobi", "quito",
    "riga", "santiago", "toronto", "warsaw", "zurich", "bogota", "havana", "manila",
)
DAYS: tuple[str, ...] = ("today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday",
                         "saturday", "sunday")
SKIES: tuple[str, ...] = ("sunny", "cloudy", "rainy", "snowy", "windy", "foggy", "stormy")
# OpenAI `tools`; the order of "properties" is the order of the arguments in a call
TOOLS: tuple[dict[str, Any], ...] = (
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city on a day.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "a city, lower case"},
            "day": {"type": "string", "enum": list(DAYS)}}, "required": ["city", "day"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "The sum of two integers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]}}},
)
_TOOL_PROMPTS: dict[str, tuple[str, ...]] = {
    "get_weather": ("weather in {city} {day}", "what is the weather in {city} {day}",
                    "how is the weather {day} in {city}"),
    "add": ("add {a} and {b}", "what is {a} plus {b}", "sum of {a} and {b}"),
}
_FINAL_ANSWERS: dict[str, str] = {"get_weather": "{day} in {city} it is {result}", "add": "the answer is {result}"}
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class Example:
    """One chat turn: the user's prompt and the expected assistant answer.

    ``result`` is the tool's output in a ``tool_answer`` example (the conversation then holds the call and it).
    """

    task: str
    prompt: str
    answer: str
    result: str | None = None

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as OpenAI chat messages (tool-call arguments as a JSON string, as on the wire)."""
        user = {"role": "user", "content": self.prompt}
        if self.task != "tool_answer":
            return [user]
        name, arguments = call_of(self.prompt)
        call = {"id": "call_0", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        return [user, {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_0", "content": self.result}]

    def tools(self) -> list[dict[str, Any]] | None:
        """The ``tools`` of the request: :data:`TOOLS` for the tool tasks, else None."""
        return [dict(t) for t in TOOLS] if self.task in TOOL_TASKS else None


def is_held_out(prompt: str) -> bool:
    """True for the tenth of all prompts that training never sees."""
    return zlib.crc32(prompt.encode()) % HELD_OUT_BUCKETS == 0


def _reverse_prompt(rng: random.Random) -> str:
    words = rng.sample(WORDS, rng.randint(MIN_WORDS, MAX_WORDS))
    return "reverse: " + " ".join(words)


def _add_prompt(rng: random.Random) -> str:
    return f"add: {rng.randint(100, 999)}+{rng.randint(100, 999)}"


def _tool_prompt(rng: random.Random) -> str:
    """A request for one of the tools: ``weather in paris today``, ``add 417 and 385`` …"""
    name = rng.choice(sorted(_TOOL_PROMPTS))
    pattern = rng.choice(_TOOL_PROMPTS[name])
    if name == "add":
        return pattern.format(a=rng.randint(100, 999), b=rng.randint(100, 999))
    return pattern.format(city=rng.choice(CITIES), day=rng.choice(DAYS))


_PROMPTS: dict[str, Callable[[random.Random], str]] = {
    "reverse": _reverse_prompt, "add": _add_prompt, "tool_call": _tool_prompt, "tool_answer": _tool_prompt,
}


def _words_of(prompt: str) -> list[str]:
    if not prompt.startswith("reverse: "):
        raise ValueError(f"not a reverse prompt: {prompt!r}")
    return prompt[len("reverse: "):].split()


def _opposite(word: str) -> str:
    return WORDS[(WORDS.index(word) + 16) % len(WORDS)]


def _next(word: str) -> str:
    return WORDS[(WORDS.index(word) + 1) % len(WORDS)]


_WORD_MAPS: dict[str, Callable[[str], str]] = {"opposite": _opposite, "next": _next}


# -- tool calls -----------------------------------------------------------------------------------
def call_of(prompt: str) -> tuple[str, dict[str, Any]]:
    """The tool call a tool prompt asks for: ``("add", {"a": 417, "b": 385})``."""
    words = prompt.split()
    if "weather" in words:
        city = next((w for w in words if w in CITIES), None)
        day = next((w for w in words if w in DAYS), None)
        if city and day:
            return "get_weather", {"city": city, "day": day}
    numbers = [int(w) for w in words if w.isdigit()]
    if words[:1] in (["add"], ["what"], ["sum"]) and len(numbers) == 2:
        return "add", {"a": numbers[0], "b": numbers[1]}
    raise ValueError(f"not a tool prompt: {prompt!r}")


def run_tool(name: str, arguments: dict[str, Any]) -> str:
    """What the demo tools return: ``add`` the sum, ``get_weather`` a made-up (fixed) sky and temperature."""
    if name == "add":
        return str(int(arguments["a"]) + int(arguments["b"]))
    if name == "get_weather":
        code = zlib.crc32(f"{arguments['city']}/{arguments['day']}".encode())
        return f"{SKIES[code % len(SKIES)]}, {code // len(SKIES) % 36} C"
    raise ValueError(f"unknown tool {name!r}; the demo tools are get_weather and add")


def _training_result(prompt: str, rng: random.Random) -> str:
    """The tool result a training conversation shows: for ``get_weather`` a random sky and temperature, so the
    model learns to quote the weather it is given; for ``add`` the true sum. (With random sums to quote digit
    by digit, a model that had learned to add wrote its own sum of the prompt's numbers in half the answers.)"""
    name, arguments = call_of(prompt)
    if name == "get_weather":
        return f"{rng.choice(SKIES)}, {rng.randint(0, 35)} C"
    return run_tool(name, arguments)


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """A call as the model writes it (Hermes / Qwen 2.5 format; the chat template renders past calls alike)."""
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def parse_tool_calls(text: str | None) -> list[tuple[str, Any]]:
    """The ``(name, arguments)`` of each ``<tool_call>`` block in ``text``; a block that is not a call gives
    ``("", block)``, so it never equals a real call."""
    calls: list[tuple[str, Any]] = []
    for block in _TOOL_CALL.findall(text or ""):
        try:
            call = json.loads(block)
            calls.append((call["name"], call["arguments"]))
        except (ValueError, KeyError, TypeError):
            calls.append(("", block))
    return calls


def final_answer(prompt: str, result: str) -> str:
    """The assistant's answer once the tool's ``result`` is in: ``the answer is 802``."""
    name, arguments = call_of(prompt)
    return _FINAL_ANSWERS[name].format(result=result, **arguments)


# -- answers and examples -------------------------------------------------------------------------
def answer(behaviour: str, prompt: str, result: str | None = None) -> str:
    """The expected answer to ``prompt`` under a task or an adapter (``opposite``, ``next``).

    ``result``: the tool's output for ``tool_answer`` (default: what :func:`run_tool` returns).
    """
    if behaviour == "add":
        left, right = prompt.removeprefix("add: ").split("+")
        return str(int(left) + int(right))
    if behaviour == "tool_call":
        return format_tool_call(*call_of(prompt))
    if behaviour == "tool_answer":
        return final_answer(prompt, run_tool(*call_of(prompt)) if result is None else result)
    if behaviour not in ("reverse", *_WORD_MAPS):
        raise ValueError(f"unknown task or adapter {behaviour!r}; known: {', '.join(ALL_TASKS + ADAPTERS)}")
    words = list(reversed(_words_of(prompt)))
    if behaviour == "reverse":
        return " ".join(words)
    return " ".join(map(_WORD_MAPS[behaviour], words))


def task_of(behaviour: str) -> str:
    """The task whose prompts a behaviour answers (an adapter's is ``reverse``)."""
    if behaviour in ALL_TASKS:
        return behaviour
    if behaviour in ADAPTERS:
        return ADAPTER_TASK
    raise ValueError(f"unknown task or adapter {behaviour!r}; known: {', '.join(ALL_TASKS + ADAPTERS)}")


def stream(behaviour: str, held_out: bool, seed: int) -> Iterator[Example]:
    """Endless examples of a task or adapter behaviour, from one side of the train/held-out split."""
    task = task_of(behaviour)
    rng = random.Random(f"{behaviour}/{task}/{seed}")
    while True:
        prompt = _PROMPTS[task](rng)
        if is_held_out(prompt) != held_out:
            continue
        if task == "tool_answer":
            result = _training_result(prompt, rng)
            yield Example(task, prompt, final_answer(prompt, result), result)
        else:
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


def score(task: str, expected: str, output: str | None) -> bool:
    """True when ``output`` answers like ``expected``: the same tool calls for ``tool_call``, else the same text."""
    if task == "tool_call":
        return parse_tool_calls(output) == parse_tool_calls(expected)
    return normalise(output) == normalise(expected)


def is_correct(behaviour: str, prompt: str, output: str | None) -> bool:
    """True when ``output`` is the expected answer under ``behaviour`` (``tool_answer``: with :func:`run_tool`'s result)."""
    return score(task_of(behaviour), answer(behaviour, prompt), output)
