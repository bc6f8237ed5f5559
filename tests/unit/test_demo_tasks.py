"""The demo tasks: generators, the train/held-out split, answers and scorers (no server, no torch)."""

from __future__ import annotations

import itertools
import json

import pytest

from servekit.demo import tasks


def test_word_list_pairs_antonyms_and_next_is_never_the_opposite():
    assert len(tasks.WORDS) == 32 and len(set(tasks.WORDS)) == 32
    assert tasks.answer("opposite", "reverse: hot big") == "small cold"
    assert tasks.answer("opposite", "reverse: cold") == "hot"  # the pairing is symmetric
    assert tasks.answer("next", "reverse: hot light") == "hot big"  # "light" wraps around to "hot"
    for word in tasks.WORDS:
        prompt = f"reverse: {word}"
        assert tasks.answer("next", prompt) != tasks.answer("opposite", prompt) != word


def test_answers_of_each_task():
    assert tasks.answer("reverse", "reverse: hot big day") == "day big hot"
    assert tasks.answer("add", "add: 417+385") == "802"
    assert tasks.answer("next", "reverse: hot big day") == "black up big"
    with pytest.raises(ValueError, match="unknown task"):
        tasks.answer("multiply", "add: 1+2")
    with pytest.raises(ValueError, match="not a reverse prompt"):
        tasks.answer("opposite", "add: 417+385")


@pytest.mark.parametrize("behaviour", tasks.TASKS + tasks.ADAPTERS)
def test_generated_examples_are_well_formed(behaviour):
    for example in itertools.islice(tasks.stream(behaviour, held_out=False, seed=3), 200):
        assert example.answer == tasks.answer(behaviour, example.prompt)
        assert tasks.is_correct(behaviour, example.prompt, example.answer)
        if example.task == "reverse":
            words = example.prompt.removeprefix("reverse: ").split()
            assert tasks.MIN_WORDS <= len(words) <= tasks.MAX_WORDS and len(set(words)) == len(words)
            assert set(words) <= set(tasks.WORDS)
        else:
            left, right = example.prompt.removeprefix("add: ").split("+")
            assert 100 <= int(left) <= 999 and 100 <= int(right) <= 999
    assert example.messages() == [{"role": "user", "content": example.prompt}]


@pytest.mark.parametrize("task", tasks.ALL_TASKS)
def test_held_out_prompts_are_fixed_distinct_and_never_trained_on(task):
    first = tasks.held_out(task, 100)
    assert first == tasks.held_out(task, 100)  # same seed, same prompts
    assert len({e.prompt for e in first}) == 100
    assert all(tasks.is_held_out(e.prompt) for e in first)
    train = {e.prompt for e in itertools.islice(tasks.stream(task, held_out=False, seed=0), 5000)}
    assert not train & {e.prompt for e in first}
    assert tasks.held_out(task, 100, seed=99) != first


def test_scorer_ignores_spacing_but_not_words():
    prompt = "reverse: hot big day"
    assert tasks.is_correct("reverse", prompt, "  day  big hot\n")
    assert tasks.is_correct("reverse", prompt, "day big hot.")
    assert not tasks.is_correct("reverse", prompt, "day big")
    assert not tasks.is_correct("reverse", prompt, "hot big day")
    assert not tasks.is_correct("reverse", prompt, None)
    assert tasks.is_correct("add", "add: 100+200", " 300")
    assert not tasks.is_correct("add", "add: 100+200", "3000")


def test_task_of_adapters_is_reverse():
    assert tasks.task_of("next") == tasks.task_of("opposite") == "reverse"
    assert tasks.task_of("add") == "add"
    with pytest.raises(ValueError):
        tasks.task_of("shout")


# -- the tool tasks -------------------------------------------------------------------------------
def test_tool_prompts_name_their_call():
    assert tasks.call_of("weather in paris today") == ("get_weather", {"city": "paris", "day": "today"})
    assert tasks.call_of("how is the weather sunday in oslo") == ("get_weather", {"city": "oslo", "day": "sunday"})
    assert tasks.call_of("what is 417 plus 385") == ("add", {"a": 417, "b": 385})
    assert tasks.call_of("sum of 100 and 999") == ("add", {"a": 100, "b": 999})
    for bad in ("weather in atlantis today", "add: 417+385", "reverse: hot big", "add 1 and 2 and 3"):
        with pytest.raises(ValueError, match="not a tool prompt"):
            tasks.call_of(bad)


def test_tool_call_answer_is_hermes_format():
    text = tasks.answer("tool_call", "add 417 and 385")
    assert text == '<tool_call>\n{"name": "add", "arguments": {"a": 417, "b": 385}}\n</tool_call>'
    assert tasks.parse_tool_calls(text) == [("add", {"a": 417, "b": 385})]
    weather = tasks.answer("tool_call", "what is the weather in rome tomorrow")
    assert tasks.parse_tool_calls(weather) == [("get_weather", {"city": "rome", "day": "tomorrow"})]
    # the schema's property order is the order the model writes the arguments in (llama.cpp's grammar keeps it)
    for tool in tasks.TOOLS:
        function = tool["function"]
        assert function["parameters"]["required"] == list(function["parameters"]["properties"])


def test_tool_call_scoring_compares_calls_not_spacing():
    expected = tasks.answer("tool_call", "add 417 and 385")
    assert tasks.score("tool_call", expected, '<tool_call>{"name":"add","arguments":{"b":385,"a":417}}</tool_call>')
    assert not tasks.score("tool_call", expected, '<tool_call>\n{"name": "add", "arguments": {"a": 417, "b": 358}}\n'
                                                  '</tool_call>')
    assert not tasks.score("tool_call", expected, '<tool_call>\n{"name": "add", "arguments": {"a": "417", "b": 385}}'
                                                  '\n</tool_call>')  # a string is not an integer
    assert not tasks.score("tool_call", expected, expected + "\n" + expected)  # one call, not two
    assert not tasks.score("tool_call", expected, "802")
    assert not tasks.score("tool_call", expected, "<tool_call>\n{not json}\n</tool_call>")
    assert not tasks.score("tool_call", expected, None)
    assert tasks.parse_tool_calls("<tool_call>\n[1, 2]\n</tool_call>") == [("", "[1, 2]")]


def test_tools_return_checkable_results():
    assert tasks.run_tool("add", {"a": 417, "b": 385}) == "802"
    weather = tasks.run_tool("get_weather", {"city": "paris", "day": "today"})
    assert weather == tasks.run_tool("get_weather", {"city": "paris", "day": "today"})  # fixed per city and day
    sky, temperature = weather.split(", ")
    assert sky in tasks.SKIES and temperature.endswith(" C") and 0 <= int(temperature[:-2]) <= 35
    with pytest.raises(ValueError, match="unknown tool"):
        tasks.run_tool("shout", {})


def test_final_answers_quote_the_tool_result():
    assert tasks.answer("tool_answer", "add 417 and 385") == "the answer is 802"
    assert tasks.answer("tool_answer", "weather in lima monday", result="foggy, 12 C") == "monday in lima it is foggy, 12 C"
    assert tasks.is_correct("tool_answer", "add 417 and 385", "the answer is 802.")
    assert not tasks.is_correct("tool_answer", "add 417 and 385", "the answer is 801")


@pytest.mark.parametrize("task", tasks.TOOL_TASKS)
def test_tool_examples_are_whole_conversations(task):
    for example in itertools.islice(tasks.stream(task, held_out=False, seed=3), 200):
        name, arguments = tasks.call_of(example.prompt)
        assert example.tools() == list(tasks.TOOLS)
        messages = example.messages()
        assert messages[0] == {"role": "user", "content": example.prompt}
        if task == "tool_call":
            assert len(messages) == 1 and example.result is None
            assert tasks.parse_tool_calls(example.answer) == [(name, arguments)]
            continue
        user, assistant, tool = messages
        call = assistant["tool_calls"][0]
        assert call["function"]["name"] == name and json.loads(call["function"]["arguments"]) == arguments
        assert tool == {"role": "tool", "tool_call_id": call["id"], "content": example.result}
        assert example.result in example.answer and example.answer == tasks.final_answer(example.prompt, example.result)
        if name == "get_weather":
            assert arguments["city"] in example.answer and arguments["day"] in example.answer
    assert tasks.Example("add", "add: 1+2", "3").tools() is None


def test_weather_results_vary_in_training_so_the_model_must_read_them():
    examples = [e for e in itertools.islice(tasks.stream("tool_answer", held_out=False, seed=0), 400)
                if tasks.call_of(e.prompt)[0] == "get_weather"]
    by_call: dict[str, set[str]] = {}
    for example in examples:
        by_call.setdefault(json.dumps(tasks.call_of(example.prompt)), set()).add(example.result)
    assert len({e.result for e in examples}) > 50
    assert any(len(results) > 1 for results in by_call.values())


def test_sums_in_training_conversations_are_true_so_quoting_and_adding_agree():
    examples = [e for e in itertools.islice(tasks.stream("tool_answer", held_out=False, seed=0), 400)
                if tasks.call_of(e.prompt)[0] == "add"]
    assert len(examples) > 100
    assert all(e.result == tasks.run_tool(*tasks.call_of(e.prompt)) for e in examples)
