"""Constrained output, asked for one way on every engine: ``server.constraint_options(json_schema=… | regex=… |
choice=… | grammar=…)`` returns the request fields that engine reads (each engine spells them differently, and
an engine ignores the spellings it does not know: the output then comes back unconstrained, silently). An
engine that cannot apply a kind refuses it with :class:`UnsupportedConstraint` instead.

``grammar`` is GBNF, the grammar language llama.cpp defined (``root ::= …``); vLLM's and SGLang's grammar
backend (xgrammar) reads the same notation. ``choice`` is one of a list of strings, exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidSpec

KINDS = ("json_schema", "regex", "choice", "grammar")


class UnsupportedConstraint(InvalidSpec):
    """The engine cannot apply this kind of constraint (it would have ignored it)."""


@dataclass(frozen=True)
class Constraint:
    """One output constraint: ``kind`` is one of :data:`KINDS`; ``value`` a JSON schema (dict), a regular
    expression, a list of strings or a GBNF grammar."""

    kind: str
    value: Any

    @property
    def schema_text(self) -> str:
        """The JSON schema as text (engines that take it as a string)."""
        return self.value if isinstance(self.value, str) else json.dumps(self.value)

    @property
    def schema_dict(self) -> dict[str, Any]:
        return json.loads(self.value) if isinstance(self.value, str) else dict(self.value)


def constraint(*, json_schema: dict[str, Any] | str | None = None, regex: str | None = None,
               choice: Sequence[str] | None = None, grammar: str | None = None) -> Constraint:
    """Exactly one constraint, checked: a JSON schema that parses, a regex that compiles, a non-empty list of
    strings, a grammar with a ``root`` rule."""
    given = {k: v for k, v in (("json_schema", json_schema), ("regex", regex), ("choice", choice),
                               ("grammar", grammar)) if v is not None}
    if len(given) != 1:
        raise InvalidSpec(f"Give exactly one of {', '.join(KINDS)} (got {', '.join(given) or 'none'}).")
    ((kind, value),) = given.items()
    if kind == "json_schema":
        try:
            schema = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError as exc:
            raise InvalidSpec(f"json_schema is not valid JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise InvalidSpec("json_schema must be a JSON object (a dict), e.g. {'type': 'object', …}.")
    elif kind == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise InvalidSpec(f"regex does not compile: {exc}") from None
    elif kind == "choice":
        if isinstance(value, str) or not value or not all(isinstance(c, str) and c for c in value):
            raise InvalidSpec("choice must be a non-empty list of non-empty strings, e.g. ['yes', 'no'].")
        value = list(value)
    elif not re.search(r"^\s*root\s*::=", value, re.MULTILINE):
        raise InvalidSpec("grammar must be GBNF with a `root ::= …` rule (llama.cpp's grammar notation).")
    return Constraint(kind, value)


def choice_as_regex(choices: Sequence[str]) -> str:
    """A regex that matches exactly one of ``choices``."""
    return "(" + "|".join(re.escape(c) for c in choices) + ")"


def choice_as_gbnf(choices: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are ``choices``."""
    return "root ::= " + " | ".join(json.dumps(c) for c in choices)


def response_format(schema: Constraint) -> dict[str, Any]:
    """OpenAI's ``response_format`` for a JSON-schema constraint (what every engine's chat API reads)."""
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema.schema_dict, "strict": True}}


__all__ = ["KINDS", "Constraint", "UnsupportedConstraint", "choice_as_gbnf", "choice_as_regex", "constraint",
           "response_format"]
