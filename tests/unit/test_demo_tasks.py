"""The demo tasks: generators, the train/held-out split, answers and scorers (no server, no torch)."""

from __future__ import annotations

import itertools

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


@pytest.mark.parametrize("task", tasks.TASKS)
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
