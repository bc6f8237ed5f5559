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


def _row(quant, size, add, margin):
    answers = [scoring.Answer("add: 1+2", "3", "3")]
    result = scoring.EvalResult("demo", None, {"add": scoring.TaskScore("add", answers)})
    return scoring.QuantRow(quant, size, {"reverse": 1.0, "add": add}, {"reverse": 9.0, "add": margin}, result,
                            {}, load_s=0.5, tokens_per_s=900.0)


def test_quality_breaks_at_the_first_type_five_points_below_the_first_row():
    table = scoring.QuantTable([_row("F16", 3.4, 0.90, 7.0), _row("Q8_0", 1.8, 0.88, 6.9),
                                _row("Q4_K_M", 1.1, 0.85, 6.5), _row("Q2_K", 0.7, 0.40, 5.0)])
    assert table.breaks_at() == "Q4_K_M"
    assert table.breaks_at(drop=0.10) == "Q2_K"
    assert table.breaks_at(drop=0.60) is None
    assert scoring.QuantTable([]).breaks_at() is None


def test_quant_table_frame_and_chart_have_a_row_and_a_point_per_type():
    table = scoring.QuantTable([_row("F16", 3.4, 0.90, 7.0), _row("Q2_K", 0.7, 0.40, 5.0)])
    frame = table.to_frame()
    assert list(frame.index) == ["F16", "Q2_K"]
    assert frame.loc["Q2_K", "add acc"] == 0.40 and frame.loc["F16", "tokens_per_s"] == 900.0
    fig = table.chart()
    accuracy = next(t for t in fig.data if t.name == "add accuracy %")
    assert list(accuracy.x) == ["F16", "Q2_K"] and list(accuracy.y) == [90.0, 40.0]
    assert any("quality breaks" in (a.text or "") for a in fig.layout.annotations)
