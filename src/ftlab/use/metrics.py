"""Scores of generated answers against reference answers, per example; a report averages them.

  exact_match  1 if the answer equals the reference once surrounding and repeated whitespace is dropped; case and
               punctuation count, so "1998-03-03" is not matched by "1998-03-03." or "Answer: 1998-03-03"
  token_f1     harmonic mean of precision and recall of the words the two share, after SQuAD's normalization
               (lowercase, no punctuation, no articles): partial credit for a partly right answer
  rouge_l      ROUGE-L F-measure (longest common subsequence of tokens), computed by torchmetrics
Loss and perplexity, which need the model rather than its text, are computed in evaluate.py.
"""

import re
import string
from collections import Counter
from typing import Dict, List

from torchmetrics.functional.text import rouge_score

NAMES = ("exact_match", "token_f1", "rouge_l")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def exact_match(prediction: str, reference: str) -> float:
    return float(" ".join(prediction.split()) == " ".join(reference.split()))


def normalized_words(text: str) -> List[str]:
    """SQuAD's answer normalization: lowercase, punctuation and articles removed, split on whitespace."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split()


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalized_words(prediction), normalized_words(reference)
    if not pred or not ref:  # nothing left to compare: right only if both are empty
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    return float(rouge_score(prediction, reference, rouge_keys="rougeL")["rougeL_fmeasure"])


def per_example(predictions: List[str], references: List[str]) -> List[Dict[str, float]]:
    return [
        {"exact_match": exact_match(p, r), "token_f1": token_f1(p, r), "rouge_l": rouge_l(p, r)}
        for p, r in zip(predictions, references)
    ]


def mean(scores: List[Dict[str, float]]) -> Dict[str, float]:
    return {name: sum(s[name] for s in scores) / len(scores) for name in NAMES} if scores else {}
