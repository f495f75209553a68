"""Examples to batches: packing, padding and the order batches come in.

Packing puts several examples into one row of at most max_seq_len tokens. Each keeps its own position ids
(0, 1, 2 ... restarting at every example) and the batch carries them instead of an attention mask: from
restarting positions transformers builds attention that stays inside each example, as a block-diagonal mask
for SDPA and eager attention and as variable-length sequences for flash-attention. The first label of
every example is masked, so no example is asked to predict the next one's first token. FineTune checks
on the loaded model that its attention honours this before it trains on packed rows.
"""

from bisect import bisect_left, insort
from typing import List, Optional

import torch

from ftlab.data.chat import IGNORE

GROUP_SPAN = 50  # length grouping sorts windows of this many batches: similar lengths, still shuffled


def pack(items: List[dict], max_len: int) -> List[dict]:
    """Best-fit decreasing: each example, longest first, goes into the fullest row it still fits in."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i]["input_ids"]))
    rows: List[List[int]] = []
    free: list = []  # sorted (space left, row index)
    for i in order:
        n = len(items[i]["input_ids"])
        k = bisect_left(free, (n, -1))
        if k == len(free):
            rows.append([i])
            insort(free, (max_len - n, len(rows) - 1))
        else:
            space, r = free.pop(k)
            rows[r].append(i)
            insort(free, (space - n, r))
    packed = []
    for members in rows:
        row = {"input_ids": [], "labels": [], "position_ids": []}
        for i in members:
            x = items[i]
            row["input_ids"] += x["input_ids"]
            row["labels"] += [IGNORE] + x["labels"][1:]
            row["position_ids"] += list(range(len(x["input_ids"])))
        packed.append(row)
    return packed


def attention_stays_inside(model, tolerance: float = 0.1) -> tuple:
    """(ok, leak, diff): run a short sequence B alone and packed after another one A. Packed, B's logits must
    match B alone (diff) far more closely than when B attends across the boundary (leak, the scale of what
    contamination does on this model). Three forwards of a dozen tokens."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    a, b = torch.randint(vocab, (1, 7), generator=g), torch.randint(vocab, (1, 5), generator=g)
    both = torch.cat([a, b], 1).to(device)
    positions = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0).to(device)
    training = model.training
    model.eval()  # no dropout
    try:
        with torch.no_grad():
            alone = model(input_ids=b.to(device)).logits[0].float()
            packed = model(input_ids=both, position_ids=positions).logits[0, 7:].float()
            leaked = model(input_ids=both).logits[0, 7:].float()
    finally:
        model.train(training)
    diff, leak = float((packed - alone).abs().max()), float((leaked - alone).abs().max())
    return diff <= tolerance * leak, leak, diff


def pad(batch: List[dict], pad_id: int) -> dict:
    """Rows padded to the longest: labels with IGNORE, inputs with pad_id. `attention_mask` marks the real tokens;
    packed rows also carry `position_ids`, with padding as a sequence of its own. The kinds (kinds/) batch their
    examples into such rows."""
    width = max(len(x["input_ids"]) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    packed = "position_ids" in batch[0]
    positions = torch.arange(width).repeat(len(batch), 1) if packed else None
    for i, x in enumerate(batch):
        n = len(x["input_ids"])
        ids[i, :n] = torch.tensor(x["input_ids"])
        labels[i, :n] = torch.tensor(x["labels"])
        mask[i, :n] = 1
        if packed:
            positions[i, :n] = torch.tensor(x["position_ids"])
            positions[i, n:] = torch.arange(width - n)
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if packed:
        out["position_ids"] = positions
    return out


def epoch_order(n: int, seed: int, epoch: int, lengths: Optional[List[int]] = None, batch_size: int = 1) -> list:
    """A seeded shuffle of range(n), set by (seed, epoch) alone. With `lengths`, grouped by length: windows
    of GROUP_SPAN batches are sorted, the batches shuffled, the longest first (an out-of-memory error then
    shows at the first step, not hours in) and a short last batch kept last."""
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    if lengths is None:
        return order
    window = batch_size * GROUP_SPAN
    ranked = [i for s in range(0, n, window) for i in sorted(order[s : s + window], key=lambda i: -lengths[i])]
    batches = [ranked[s : s + batch_size] for s in range(0, n, batch_size)]
    tail = [batches.pop()] if len(batches[-1]) < batch_size else []
    longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]]) if batches else 0
    head = [batches.pop(longest)] if batches else []
    shuffled = [batches[b] for b in torch.randperm(len(batches), generator=g).tolist()]
    return [i for batch in head + shuffled + tail for i in batch]


def padding_fraction(rows: List[tuple], order: List[int], batch_size: int) -> float:
    """Share of the batch tensors' tokens that are padding, over one epoch in `order`; `rows`: each example's batch
    row lengths (Kind.rows: a preference pair's two answers)."""
    real = padded = 0
    for s in range(0, len(order), batch_size):
        rows_here = [n for i in order[s : s + batch_size] for n in rows[i]]
        real += sum(rows_here)
        padded += max(rows_here) * len(rows_here)
    return 1 - real / padded if padded else 0.0
