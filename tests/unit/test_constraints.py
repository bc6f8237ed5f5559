"""One way to ask for constrained output, spelled per engine; kinds an engine would ignore are refused."""

from __future__ import annotations

import re

import pytest

from servekit.constraints import UnsupportedConstraint, choice_as_gbnf, choice_as_regex, constraint
from servekit.engines import get_engine
from servekit.errors import InvalidSpec

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
GRAMMAR = 'root ::= [0-9]+'


@pytest.mark.parametrize(("given", "words"), [
    ({}, "exactly one"),
    ({"regex": "a", "choice": ["a"]}, "exactly one"),
    ({"json_schema": "{not json"}, "not valid JSON"),
    ({"json_schema": "[1, 2]"}, "JSON object"),
    ({"regex": "(unclosed"}, "does not compile"),
    ({"choice": "yes"}, "non-empty list"),
    ({"choice": []}, "non-empty list"),
    ({"grammar": "word ::= [a-z]+"}, "root ::="),
])
def test_bad_constraints_say_how_to_write_them(given, words):
    with pytest.raises(InvalidSpec, match=words):
        constraint(**given)


def test_choice_helpers_match_exactly_the_choices():
    pattern = choice_as_regex(["a.b", "c|d", "yes"])
    assert all(re.fullmatch(pattern, c) for c in ["a.b", "c|d", "yes"])
    assert not re.fullmatch(pattern, "axb") and not re.fullmatch(pattern, "c")
    assert choice_as_gbnf(['say "hi"', "no"]) == 'root ::= "say \\"hi\\"" | "no"'


def test_each_engine_spells_each_kind_its_own_way():
    llama, vllm, sglang = (get_engine(n) for n in ("llamacpp", "vllm", "sglang"))
    c = {kind: constraint(**{kind: value}) for kind, value in
         (("json_schema", SCHEMA), ("regex", "[0-9]+"), ("choice", ["yes", "no"]), ("grammar", GRAMMAR))}
    assert llama.constraint_options(c["json_schema"]) == {"extra_body": {"json_schema": SCHEMA}}
    assert llama.constraint_options(c["grammar"]) == {"extra_body": {"grammar": GRAMMAR}}
    assert llama.constraint_options(c["choice"]) == {"extra_body": {"grammar": 'root ::= "yes" | "no"'}}
    assert vllm.constraint_options(c["json_schema"]) == {"extra_body": {"structured_outputs": {"json": SCHEMA}}}
    assert vllm.constraint_options(c["regex"]) == {"extra_body": {"structured_outputs": {"regex": "[0-9]+"}}}
    assert vllm.constraint_options(c["choice"]) == {"extra_body": {"structured_outputs": {"choice": ["yes", "no"]}}}
    assert vllm.constraint_options(c["grammar"]) == {"extra_body": {"structured_outputs": {"grammar": GRAMMAR}}}
    assert sglang.constraint_options(c["json_schema"])["response_format"]["json_schema"]["schema"] == SCHEMA
    assert sglang.constraint_options(c["regex"]) == {"extra_body": {"regex": "[0-9]+"}}
    assert sglang.constraint_options(c["choice"]) == {"extra_body": {"regex": "(yes|no)"}}
    assert sglang.constraint_options(c["grammar"]) == {"extra_body": {"ebnf": GRAMMAR}}


def test_llama_cpp_refuses_a_regex_instead_of_ignoring_it():
    with pytest.raises(UnsupportedConstraint, match="no regex constraint.*GBNF grammar.*vllm or sglang"):
        get_engine("llamacpp").constraint_options(constraint(regex="[0-9]+"))


def test_a_schema_given_as_text_is_sent_as_an_object():
    options = get_engine("llamacpp").constraint_options(constraint(json_schema='{"type": "integer"}'))
    assert options == {"extra_body": {"json_schema": {"type": "integer"}}}
