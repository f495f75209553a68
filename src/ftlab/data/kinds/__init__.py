"""The kinds of example a batch carries. A data format declares the kind its rows become and a method the kind it
trains on; nothing guesses a kind from an example's keys.

  tokens.py  input_ids + labels: a chat conversation, or a block of a text document (SFT); packable
  pair.py    a prompt with a chosen and a rejected answer, both scored (DPO, ORPO, SimPO)
  judged.py  a prompt with one answer and whether it is desirable (KTO)
  prompt.py  a prompt alone, with what its reward functions read; online methods sample the answers (GRPO)

Each kind knows an example's batch rows and supervised tokens, how its examples become one batch, the filler a
rank with no share of a short last batch trains on, how preview shows one and what evaluation measures on it.
Formats and methods name their kind (`kind = "pair"`); what batches examples looks it up in KINDS.
"""

from typing import List

from ftlab.data.chat import IGNORE
from ftlab.utils.registry import Registry

KINDS = Registry("example kind", __name__)


class Kind:
    """What every kind provides; the examples are dicts of token lists (and, per kind, a few numbers)."""

    name: str
    packable = False
    """Several examples fit into one row (data.packing): only single token sequences."""

    def rows(self, item: dict) -> tuple:
        """The lengths of the batch rows the example becomes (a pair: both answers)."""
        return (len(item["input_ids"]),)

    def length(self, item: dict) -> int:
        """Tokens of the example, every row of it."""
        return sum(self.rows(item))

    def supervised(self, item: dict) -> int:
        """Tokens that get a loss: labels predict the next token, so a row's first position never does."""
        return supervised(item["labels"])

    def collate(self, items: List[dict], pad_id: int) -> dict:
        raise NotImplementedError

    def adopts(self, fmt) -> bool:
        """Rows of `fmt`, a format of another kind, can become examples of this one (chat rows as prompts)."""
        return False

    def adopt(self, tokenizer, parsed, max_seq_len: int, where: str):
        """What `fmt.parse` made of a row of an adopted format, as an example of this kind (or None: dropped)."""
        raise NotImplementedError

    def filler(self, like: dict, pad_id: int) -> dict:
        """A one-token example shaped like `like` with nothing to learn: what a rank with no share of a short last
        batch trains on, so that every rank takes the same steps."""
        out = {}
        for k, v in like.items():
            if isinstance(v, list):
                out[k] = [IGNORE] if k.endswith("labels") else [0] if k == "position_ids" else [pad_id]
            else:
                out[k] = 0
        return out

    def show(self, tokenizer, item: dict, index, color: bool) -> str:
        """The example as preview prints it, supervised tokens marked; `index` numbers it (1, or "1 from chats": a
        mix names the source)."""
        raise NotImplementedError

    reported: dict = {}
    """{score: (label, shown as a percentage)} of what `scores` measures, in the order reports show them."""
    explained: str = ""
    """What those scores mean, for the report's notes."""

    def scores(self, model, items: List[dict], batch_size: int, pad_id: int) -> dict:
        """What evaluation measures on held-out examples of this kind beyond the answers (report.json's scores)."""
        return {}


def supervised(labels: List[int]) -> int:
    return sum(1 for label in labels[1:] if label != IGNORE)


def marked(tokenizer, ids: List[int], labels: List[int], color: bool) -> str:
    """The text of `ids` with its supervised tokens wrapped: green on a terminal, [[...]] elsewhere."""
    start, end = ("\033[1;32m", "\033[0m") if color else ("[[", "]]")
    pieces, run, run_supervised = [], [], None
    for token, label in list(zip(ids, labels)) + [(None, None)]:
        is_supervised = label is not None and label != IGNORE
        if run and (token is None or is_supervised != run_supervised):
            text = tokenizer.decode(run)
            pieces.append(f"{start}{text}{end}" if run_supervised else text)
            run = []
        run.append(token)
        run_supervised = is_supervised
    return "".join(pieces)
