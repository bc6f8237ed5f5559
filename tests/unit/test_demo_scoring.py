"""Scoring pieces that need no server: replies written back as text, task names, scores per task."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from servekit.demo import scoring, tasks


def _message(content=None, calls=()):
    return SimpleNamespace(content=content, tool_calls=[
        SimpleNamespace(function=SimpleNamespace(name=name, arguments=arguments)) for name, arguments in calls])


def test_tool_calls_are_written_back_in_the_models_format():
    text = scoring.reply_text(_message(calls=[("add", '{"a":417,"b":385}')]))
    assert text == tasks.answer("tool_call", "add 417 and 385")
    assert scoring.reply_text(_message("the answer is 802")) == "the answer is 802"
    assert scoring.reply_text(_message(None)) == ""
    two = scoring.reply_text(_message(calls=[("add", '{"a": 1, "b": 2}'), ("add", '{"a": 3, "b": 4}')]))
    assert tasks.parse_tool_calls(two) == [("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})]


def test_tool_call_arguments_that_are_not_json_score_wrong():
    text = scoring.reply_text(_message(calls=[("add", "a=417, b=385")]))
    assert not tasks.score("tool_call", tasks.answer("tool_call", "add 417 and 385"), text)


def test_task_scores_use_each_examples_own_answer():
    example = tasks.held_out("tool_answer", 1)[0]  # its weather or sum comes with the example
    right = scoring.Answer(example.prompt, example.answer, example.answer + ".")
    wrong = scoring.Answer(example.prompt, example.answer, "the answer is")
    score = scoring.TaskScore("tool_answer", [right, wrong])
    assert score.accuracy == 0.5 and score.failures() == [wrong]


def test_tool_tasks_are_known_but_not_scored_by_default():
    assert scoring._task_list(None, None) == ["reverse", "add"]  # a plain server has no tool parser
    assert scoring._task_list("tool_call", None) == ["tool_call"]
    with pytest.raises(ValueError, match="tool_answer"):
        scoring._task_list("multiply", None)
