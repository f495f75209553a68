"""Answer scores on hand-worked examples, and how report.py turns them into metrics.json keys and a table."""

import pytest
import torchmetrics.functional.text  # noqa: F401  imported at collection, so no single test pays torch's import

from ftlab.use import metrics, report

# ── exact_match ──────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("1998-03-03", "1998-03-03", 1.0),
        (" 1998-03-03\n", "1998-03-03", 1.0),  # surrounding whitespace is dropped
        ("New  York\tCity", "New York City", 1.0),  # repeated inner whitespace collapses to one space
        ("1998-03-03.", "1998-03-03", 0.0),  # punctuation counts
        ("Answer: 1998-03-03", "1998-03-03", 0.0),  # extra words count
        ("paris", "Paris", 0.0),  # case counts
        ("NewYork", "New York", 0.0),  # whitespace between words is not dropped, only collapsed
    ],
)
def test_exact_match_ignores_only_whitespace(prediction, reference, expected):
    assert metrics.exact_match(prediction, reference) == expected


# ── token_f1 ─────────────────────────────────────────────────────────────────────────────────────────────


def test_token_f1_partial_answer_gets_partial_credit():
    # "The cat sat." -> [cat, sat]; "a cat sat down" -> [cat, sat, down]; common 2
    # P = 2/2 = 1, R = 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = (4/3) / (5/3) = 0.8
    assert metrics.token_f1("The cat sat.", "a cat sat down") == pytest.approx(0.8)


def test_token_f1_is_symmetric_in_precision_and_recall():
    # swapping the two swaps P and R (1 and 2/3): the harmonic mean is still 0.8
    assert metrics.token_f1("a cat sat down", "The cat sat.") == pytest.approx(0.8)


def test_token_f1_ignores_case_punctuation_and_articles():
    # "The Eiffel Tower!" -> [eiffel, tower]; "eiffel tower" -> [eiffel, tower]
    assert metrics.token_f1("The Eiffel Tower!", "eiffel tower") == 1.0


def test_token_f1_of_disjoint_answers_is_zero():
    assert metrics.token_f1("blue whale", "red fox") == 0.0


def test_token_f1_both_empty_after_normalization_is_a_match():
    # "The." -> [] and "a" -> []: nothing to compare, and both agree on nothing
    assert metrics.token_f1("The.", "a") == 1.0
    assert metrics.token_f1("", "") == 1.0


def test_token_f1_one_empty_side_scores_zero():
    # "the" -> [] against [cat]
    assert metrics.token_f1("the", "cat") == 0.0
    assert metrics.token_f1("cat", "!!") == 0.0


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        # [x, x, y] vs [x, y, y]: common = min(2,1) + min(1,2) = 2; P = R = 2/3; F1 = 2/3
        ("x x y", "x y y", 2 / 3),
        # [x, x, x] vs [x]: common = min(3,1) = 1; P = 1/3, R = 1; F1 = 2 * 1/3 / (4/3) = 0.5
        ("x x x", "x", 0.5),
        # [x] vs [x, x]: common 1; P = 1, R = 1/2; F1 = 1 / 1.5 = 2/3
        ("x", "x x", 2 / 3),
        # [x, x] vs [x, x]: every repeat is matched
        ("x x", "x x", 1.0),
    ],
)
def test_token_f1_counts_repeated_words_with_multiplicity(prediction, reference, expected):
    assert metrics.token_f1(prediction, reference) == pytest.approx(expected)


def test_normalized_words_follow_squad():
    # lowercase, punctuation removed (the hyphen too: it joins the digits), articles dropped
    assert metrics.normalized_words("The 1998-03-03 of an Apple!") == ["19980303", "of", "apple"]


# ── rouge_l ──────────────────────────────────────────────────────────────────────────────────────────────


def test_rouge_l_one_word_swapped():
    # [the cat sat on the mat] vs [the cat is on the mat]: LCS = the cat on the mat = 5 of 6 each
    # P = R = 5/6, F = 5/6
    assert metrics.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)


def test_rouge_l_splits_dates_on_punctuation():
    # [1998, 03, 03] vs [1998, 03, 04]: LCS = 1998 03 = 2 of 3 each; F = 2/3
    assert metrics.rouge_l("1998-03-03", "1998-03-04") == pytest.approx(2 / 3)


def test_rouge_l_shorter_prediction():
    # [the cat] vs [the cat sat on the mat]: LCS 2; P = 2/2 = 1, R = 2/6 = 1/3; F = (2/3) / (4/3) = 0.5
    assert metrics.rouge_l("the cat", "the cat sat on the mat") == pytest.approx(0.5)


def test_rouge_l_identical_and_disjoint():
    assert metrics.rouge_l("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert metrics.rouge_l("blue whale", "red fox") == pytest.approx(0.0)


# ── per_example and mean ─────────────────────────────────────────────────────────────────────────────────


def test_per_example_scores_each_pair():
    scores = metrics.per_example(["1998-03-03", "1998-03-04"], ["1998-03-03", "1998-03-03"])
    assert scores[0] == {"exact_match": 1.0, "token_f1": 1.0, "rouge_l": pytest.approx(1.0)}
    # second: not equal; SQuAD words [19980304] vs [19980303] share nothing; ROUGE-L tokens 2 of 3 -> 2/3
    assert scores[1] == {"exact_match": 0.0, "token_f1": 0.0, "rouge_l": pytest.approx(2 / 3)}


def test_mean_averages_each_metric():
    scores = [
        {"exact_match": 1.0, "token_f1": 1.0, "rouge_l": 1.0},
        {"exact_match": 0.0, "token_f1": 0.5, "rouge_l": 2 / 3},
        {"exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0},
    ]
    # exact match (1+0+0)/3 = 1/3; token F1 (1+0.5+0)/3 = 0.5; ROUGE-L (1 + 2/3 + 0)/3 = 5/9
    assert metrics.mean(scores) == {
        "exact_match": pytest.approx(1 / 3),
        "token_f1": pytest.approx(0.5),
        "rouge_l": pytest.approx(5 / 9),
    }


def test_mean_of_no_examples_is_empty():
    assert metrics.mean([]) == {}


# ── report.flat and report.table ─────────────────────────────────────────────────────────────────────────


def _doc(scores: dict, examples: int = 50, do_sample: bool = False) -> dict:
    """A report document in the shape report.build returns."""
    return {
        "run": "outputs/2026-01-01/10-00-00",
        "model": "ftlab/tiny-llama",
        "data": "data/dates.jsonl",
        "data_fingerprint": "abc123",
        "split": "test",
        "examples": examples,
        "generation": {"do_sample": do_sample, "max_new_tokens": 64, "batch_size": 8},
        "seed": 42,
        "train_on": "assistant",
        "scores": scores,
    }


BASE = {"exact_match": 0.0, "token_f1": 0.5, "rouge_l": 0.25, "loss": 2.5, "perplexity": None}
TUNED = {"exact_match": 0.92, "token_f1": 0.875, "rouge_l": 0.75, "loss": 0.5, "perplexity": 1.6487}


def test_flat_names_tuned_eval_and_base_base_eval():
    assert report.flat(_doc({"base": BASE, "tuned": TUNED}, examples=50)) == {
        "base_eval_exact_match": 0.0,
        "base_eval_token_f1": 0.5,
        "base_eval_rouge_l": 0.25,
        "base_eval_loss": 2.5,
        "eval_exact_match": 0.92,
        "eval_token_f1": 0.875,
        "eval_rouge_l": 0.75,
        "eval_loss": 0.5,
        "eval_perplexity": 1.6487,
        "eval_examples": 50,
    }  # base perplexity None: left out


def test_flat_of_a_model_scored_alone():
    assert report.flat(_doc({"model": {"exact_match": 0.5, "loss": None}}, examples=2)) == {
        "eval_exact_match": 0.5,
        "eval_examples": 2,
    }


def test_table_compares_base_and_tuned_in_points():
    assert report.table(_doc({"base": BASE, "tuned": TUNED})).splitlines() == [
        "50 examples of the test split of data/dates.jsonl; generation: greedy, max_new_tokens=64",
        "",
        "| metric | base | tuned | change |",
        "|---|---:|---:|---:|",
        "| exact match | 0.0% | 92.0% | +92.0 pts |",  # 100 * (0.92 - 0.0)
        "| token F1 | 50.0% | 87.5% | +37.5 pts |",  # 100 * (0.875 - 0.5)
        "| ROUGE-L | 25.0% | 75.0% | +50.0 pts |",  # 100 * (0.75 - 0.25)
        "| loss | 2.5 | 0.5 | -2 |",  # not a percentage: plain difference
        "| perplexity | n/a | 1.649 |  |",  # no base value: no change
    ]


def test_table_of_a_model_alone_has_no_change_column():
    lines = report.table(_doc({"model": TUNED}, examples=3, do_sample=True)).splitlines()
    assert lines[0] == "3 examples of the test split of data/dates.jsonl; generation: sampling, max_new_tokens=64"
    assert lines[2:5] == ["| metric | model |", "|---|---:|", "| exact match | 92.0% |"]
    assert not any("change" in line or "pts" in line for line in lines)
