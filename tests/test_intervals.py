"""The numbers behind an evaluation's comparisons, worked by hand: the paired bootstrap interval, a judge's verdicts
read from its replies, and the win rate, ties and order agreement made of them."""

import pytest

from ftlab.use import intervals, judge, tables
from ftlab.utils.errors import FtlabError


def test_a_constant_difference_has_an_interval_of_one_point():
    got = intervals.paired([0, 1, 0, 1], [1, 2, 1, 2], resamples=200, seed=0)
    assert got == {"base": 0.5, "tuned": 1.5, "difference": 1.0, "low": 1.0, "high": 1.0, "n": 4}


def test_two_documents_give_the_interval_of_their_extremes():
    # differences 0 and 1: a resample of two takes both 0s (p = 1/4), one of each (1/2) or both 1s (1/4), so its mean
    # is 0, 0.5 or 1 and the 2.5th and 97.5th percentiles are 0 and 1
    got = intervals.paired([1, 0], [1, 1], resamples=10_000, seed=0)
    assert (got["difference"], got["low"], got["high"]) == (0.5, 0.0, 1.0)


def test_the_interval_is_seeded_and_holds_the_mean():
    base, tuned = [1, 0, 1, 0, 0, 1, 0, 0], [1, 1, 1, 0, 1, 1, 0, 1]
    first, again = (intervals.paired(base, tuned, 1000, seed=3) for _ in range(2))
    assert first == again and first["difference"] == 0.375  # (6 - 3) / 8
    assert first["low"] <= 0.375 <= first["high"] and first["low"] >= 0  # tuned is never worse on a document
    with pytest.raises(ValueError, match="same documents"):
        intervals.paired([1], [1, 0], 100, 0)


def test_a_verdict_is_the_last_bracketed_letter():
    assert judge.verdict("A is terse. B explains. [[B]]") == "B"
    assert judge.verdict("First thought [[A]]; on reflection [[ C ]]") == "C"
    assert judge.verdict("Both are fine.") is None and judge.verdict("") is None


def test_a_verdict_favours_the_model_shown_in_that_place():
    assert [judge.outcome("base", v) for v in ("A", "B", "C", None)] == ["base", "tuned", "tie", None]
    assert [judge.outcome("tuned", v) for v in ("A", "B", "C")] == ["tuned", "base", "tie"]


def _pair(*favours):
    return [{"favours": f, "verdict": None if f is None else "X"} for f in favours]


def test_win_rate_ties_and_order_agreement_by_hand():
    judged = [
        _pair("tuned", "tuned"),  # 1.0, orders agree
        _pair("tuned", "base"),  # 0.5, they disagree: a tie
        _pair("tie", "tuned"),  # 0.75, they disagree
        [],  # identical answers: 0.5 without asking
        _pair(None, None),  # no verdict at all: left out
        _pair("base", None),  # 0.0 from its one verdict
    ]
    got = judge.summary(judged, [False, False, False, True, False, False], resamples=500, seed=0)
    assert got["win_rate"] == pytest.approx((1 + 0.5 + 0.75 + 0.5 + 0) / 5)
    assert (got["pairs"], got["judged"], got["identical"], got["no_verdict"]) == (6, 5, 1, 3)
    assert (got["wins"], got["ties"], got["losses"]) == (2, 2, 1)
    assert got["order_agreement"] == pytest.approx(1 / 3)  # of the three pairs with two verdicts, one agrees
    assert 0 <= got["low"] <= got["win_rate"] <= got["high"] <= 1


def test_the_rubric_is_filled_once_and_a_bad_one_is_named(tmp_path):
    text = judge.render(judge.rubric(None), [{"role": "user", "content": "2+2?"}], "4", "{answer_b}", "5")
    assert "User: 2+2?" in text and "[Answer A]\n{answer_b}\n" in text and "[Answer B]\n5\n" in text
    bad = tmp_path / "rubric.md"
    bad.write_text("Which is better, {answer_a} or that?")
    with pytest.raises(FtlabError, match=r"judge.rubric=.*rubric.md: it has no \{question\}, \{answer_b\}"):
        judge.rubric(str(bad))


def test_the_tables_show_the_interval_and_the_verdict_counts():
    section = {"lm_eval": "0.4.13", "num_fewshot": {"facts": 0}, "seed": 1, "limit": None, "chat_template": False,
               "rows": [{"task": "facts", "metric": "acc", "filter": "none", "base": 0.25, "tuned": 0.5,
                         "difference": 0.25, "low": 0.0, "high": 0.5, "n": 4}]}  # fmt: skip
    assert tables.harness(section)[2:] == [
        "| task | metric | base | tuned | change | 95% interval |",
        "|---|---|---:|---:|---:|---:|",
        "| facts | acc | 0.2500 | 0.5000 | +0.2500 | +0.0000 to +0.5000 |",
    ]
    verdicts = {"judge": "j", "pairs": 3, "identical": 1, "no_verdict": 0, "asked": 4, "cached": 0, "wins": 1,
                "ties": 1, "losses": 1, "win_rate": 0.5, "low": 0.0, "high": 1.0, "order_agreement": 0.5}  # fmt: skip
    assert tables.judge(verdicts)[4:] == [
        "| win rate (tie = half a win) | 50.0% (95% interval 0.0% to 100.0%) |",
        "| tuned better / tie / base better | 1 / 1 / 1 |",
        "| both orders agree | 50.0% |",
    ]


def test_the_held_out_scores_change_has_its_interval_in_the_report():
    from ftlab.use import report

    base = [{"exact_match": 0, "token_f1": 0.5, "rouge_l": 0}, {"exact_match": 0, "token_f1": 0.5, "rouge_l": 1}]
    tuned = [{"exact_match": 1, "token_f1": 1.0, "rouge_l": 1}] * 2
    results = {"base": {"per_example": base}, "tuned": {"per_example": tuned}}
    # per example: exact match 0 -> 1 twice, token F1 0.5 -> 1 twice, ROUGE-L 0 -> 1 once and 1 -> 1 once
    assert report.changes(results, resamples=10_000, seed=0) == {
        "exact_match": {"low": 1.0, "high": 1.0},
        "token_f1": {"low": 0.5, "high": 0.5},
        "rouge_l": {"low": 0.0, "high": 1.0},
    }
