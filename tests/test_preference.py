"""Preference tuning: the losses against the papers' formulas worked by hand, the reference model, the scored
tokens of every preference row shape, bad rows, and tiny runs of each method (resume, sweep)."""

import csv
import json
import math
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import ASSETS, run_cli, run_dirs, run_main, write_rows
from ftlab import FineTune, compose
from ftlab.data import chat
from ftlab.data.chat import IGNORE
from ftlab.methods import dpo, kto, orpo, simpo
from ftlab.utils.errors import ConfigError, FtlabError
from test_data import smollm2_source  # noqa: F401 (a fixture)

PAIRS, KTO = ASSETS / "pairs.jsonl", ASSETS / "kto.jsonl"
END = "<|im_end|>"  # the tiny model's ChatML end-of-turn marker, scored with each answer


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ── the losses, by hand ──────────────────────────────────────────────────────────────────────────────────────
# Two pairs of summed log-probs: policy (chosen, rejected) and reference (chosen, rejected).
# Pair 1: log-ratios +1 and -1, so h = 2. Pair 2: log-ratios -0.5 and +0.5, so h = -1.
POLICY_C, POLICY_R = torch.tensor([-2.0, -4.0]), torch.tensor([-5.0, -4.0])
REF_C, REF_R = torch.tensor([-3.0, -3.5]), torch.tensor([-4.0, -4.5])


@pytest.mark.parametrize(
    "loss,smoothing,expected",
    [
        # DPO (Rafailov et al. 2023, eq. 7): -log sigmoid(beta h), beta = 0.5
        ("sigmoid", 0.0, [math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(0.5))]),
        # conservative DPO (Mitchell 2023): -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h), e = 0.1
        (
            "sigmoid",
            0.1,
            [
                0.9 * math.log(1 + math.exp(-1.0)) + 0.1 * math.log(1 + math.exp(1.0)),
                0.9 * math.log(1 + math.exp(0.5)) + 0.1 * math.log(1 + math.exp(-0.5)),
            ],
        ),
        # IPO (Azar et al. 2023, eq. 17): (h - 1 / (2 beta))^2 = (h - 1)^2
        ("ipo", 0.0, [(2 - 1) ** 2, (-1 - 1) ** 2]),
        # hinge (SLiC, Zhao et al. 2023): max(0, 1 - beta h)
        ("hinge", 0.0, [0.0, 1.5]),
    ],
)
def test_dpo_losses_equal_the_papers_formulas(loss, smoothing, expected):
    per, chosen, rejected = dpo.dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, 0.5, loss, smoothing)
    assert per.tolist() == pytest.approx(expected, abs=1e-6)
    assert chosen.tolist() == pytest.approx([0.5, -0.25]) and rejected.tolist() == pytest.approx([-0.5, 0.25])


def test_orpo_loss_equals_the_papers_formula():
    # ORPO (Hong et al. 2024, eqs. 6-8): mean token probabilities 0.5 (chosen) and 0.2 (rejected): odds 1 and
    # 0.25, log odds ratio log 4, so L = -log 0.5 + lambda log(1 + 1/4)
    per, chosen, rejected = orpo.orpo_loss(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.2)]), 0.1)
    assert per.item() == pytest.approx(math.log(2) + 0.1 * math.log(1.25), abs=1e-6)
    assert chosen.item() == pytest.approx(0.1 * math.log(0.5)) and rejected.item() == pytest.approx(0.1 * math.log(0.2))


def test_orpo_odds_stay_finite_when_an_answer_is_certain():
    per, *_ = orpo.orpo_loss(torch.tensor([0.0]), torch.tensor([-1.0]), 0.1)
    assert torch.isfinite(per).all()


def test_simpo_loss_equals_the_papers_formula():
    # SimPO (Meng et al. 2024, eq. 6): -log sigmoid(beta (mean_c - mean_r) - gamma) = -log sigmoid(2 x 1 - 1)
    per, chosen, rejected = simpo.simpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), 2.0, 1.0)
    assert per.item() == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)
    assert (chosen.item(), rejected.item()) == pytest.approx((-2.0, -4.0))


@pytest.mark.parametrize("kl,z0", [(0.2, 0.2), (-0.3, 0.0)])  # the reference point is max(0, KL)
def test_kto_loss_equals_the_papers_formula(kl, z0):
    # KTO (Ethayarajh et al. 2024, eq. 8), beta 0.5: a desirable answer with log-ratio 1 and an undesirable one
    # with log-ratio -1; weights w_D = 1, w_U = 2
    per, rewards = kto.kto_loss(
        torch.tensor([-2.0, -2.0]),
        torch.tensor([-3.0, -1.0]),
        torch.tensor([True, False]),
        torch.tensor(kl),
        0.5,
        1.0,
        2.0,
    )
    expected = [1 - sigmoid(0.5 * (1 - z0)), 2 * (1 - sigmoid(0.5 * (z0 + 1)))]
    assert per.tolist() == pytest.approx(expected, abs=1e-6)
    assert rewards.tolist() == pytest.approx([0.5, -0.5])


# ── data: every row shape, its scored tokens, bad rows ──────────────────────────────────────────────────────────
def prepare(tmp_path, *overrides) -> SimpleNamespace:
    """FineTune's data stages up to the data module, on the built-in byte tokenizer (no model needed): the tokenizer,
    the tokenized splits and their format."""
    ft = FineTune(compose(["model=tiny", f"cache_dir={tmp_path / 'cache'}", "data.val_size=2", *overrides]))
    tokenizer = ft.load_tokenizer(None)
    prepared = ft.prepare_data(tokenizer).prepared
    return SimpleNamespace(tokenizer=tokenizer, prepared=prepared, data_format=prepared.format)


def scored(ft, ids, labels) -> str:
    return ft.tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE])


def sides(ft, example) -> tuple:
    """(chosen text, chosen scored text, rejected text, rejected scored text) of one pair."""
    decode = ft.tokenizer.decode
    return (
        decode(example["input_ids"]),
        scored(ft, example["input_ids"], example["labels"]),
        decode(example["rejected_ids"]),
        scored(ft, example["rejected_ids"], example["rejected_labels"]),
    )


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


SHAPES = {
    "plain": [{"prompt": f"Double {i}.", "chosen": str(2 * i), "rejected": f"{i}{i}"} for i in range(6)],
    "conversational": [
        {"prompt": [user(f"Double {i}.")], "chosen": [assistant(str(2 * i))], "rejected": [assistant(f"{i}{i}")]}
        for i in range(6)
    ],
    "whole": [  # UltraFeedback-binarized: whole conversations, the prompt column repeating their opening
        {
            "prompt": f"Double {i}.",
            "chosen": [user(f"Double {i}."), assistant(str(2 * i))],
            "rejected": [user(f"Double {i}."), assistant(f"{i}{i}")],
        }
        for i in range(6)
    ],
    "whole-no-prompt": [  # hh-rlhf as message lists: the shared turns are the prompt
        {
            "chosen": [user(f"Double {i}."), assistant(str(2 * i))],
            "rejected": [user(f"Double {i}."), assistant(f"{i}{i}")],
        }
        for i in range(6)
    ],
    "anthropic-hh": [  # the raw Anthropic-HH strings
        {
            "chosen": f"\n\nHuman: Double {i}.\n\nAssistant: {2 * i}",
            "rejected": f"\n\nHuman: Double {i}.\n\nAssistant: {i}{i}",
        }
        for i in range(6)
    ],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_preference_shape_scores_exactly_the_answers(shape, tmp_path, capsys):
    ft = prepare(tmp_path, f"data.path={write_rows(tmp_path / 'pairs.jsonl', SHAPES[shape])}", "method=dpo")
    assert ft.data_format == "preference"
    assert "data format: preference (detected from the columns" in capsys.readouterr().out
    examples = [x for split in ft.prepared.splits.values() for x in split.items]
    assert len(examples) == 6
    seen = set()
    for x in examples:
        chosen, chosen_scored, rejected, rejected_scored = sides(ft, x)
        i = int(chosen.split("Double ")[1].split(".")[0])
        seen.add(i)
        prompt = f"<|im_start|>user\nDouble {i}.<|im_end|>\n<|im_start|>assistant\n"
        assert chosen == prompt + f"{2 * i}{END}\n" and rejected == prompt + f"{i}{i}{END}\n"
        assert (chosen_scored, rejected_scored) == (f"{2 * i}{END}", f"{i}{i}{END}")
    assert seen == set(range(6))


def test_a_multi_turn_prompt_keeps_its_assistant_turns_as_context(tmp_path):
    history = [user("Hi."), assistant("Hello."), user("Double 3.")]
    rows = [{"prompt": history, "chosen": [assistant("6")], "rejected": [assistant("33")]}] * 4
    ft = prepare(tmp_path, f"data.path={write_rows(tmp_path / 'p.jsonl', rows)}", "method=dpo")
    _, chosen_scored, _, rejected_scored = sides(ft, ft.prepared.splits["train"].items[0])
    assert (chosen_scored, rejected_scored) == (f"6{END}", f"33{END}")


def test_kto_rows_score_the_completion_and_keep_their_label(tmp_path):
    ft = prepare(tmp_path, f"data.path={KTO}", "method=kto")
    assert ft.data_format == "kto"
    x = ft.prepared.splits["train"].items[0]
    text = ft.tokenizer.decode(x["input_ids"])
    answer = text.split("<|im_start|>assistant\n")[1].removesuffix("\n")
    assert scored(ft, x["input_ids"], x["labels"]) == answer
    assert ft.tokenizer.decode(x["input_ids"][: x["prompt_len"]]).endswith("<|im_start|>assistant\n")
    rows = [json.loads(line) for line in KTO.read_text().splitlines()]
    by_answer = {r["completion"] + END: r["label"] for r in rows}
    assert all(
        by_answer[scored(ft, y["input_ids"], y["labels"])] == bool(y["desirable"])
        for y in ft.prepared.splits["train"].items
    )


def test_kto_labels_from_csv_text(tmp_path):
    rows = [
        {"prompt": f"Double {i}.", "completion": str(2 * i), "label": "true" if i % 2 else "false"} for i in range(6)
    ]
    ft = prepare(tmp_path, f"data.path={write_rows(tmp_path / 'k.csv', rows)}", "method=kto")
    assert sorted(x["desirable"] for s in ft.prepared.splits.values() for x in s.items) == [0, 0, 0, 1, 1, 1]


BAD = [
    (
        {"prompt": "Double 1.", "chosen": "2", "rejected": "2"},
        "'chosen' and 'rejected' are the same; a pair must differ",
    ),
    ({"prompt": "Double 1.", "chosen": " ", "rejected": "11"}, "column 'chosen' is an empty string"),
    ({"prompt": "Double 1.", "chosen": "2", "rejected": []}, "column 'rejected' must be a non-empty list of turns"),
    (
        {"prompt": "Double 1.", "chosen": "2", "rejectd": "11"},
        "no column 'rejected' (columns: prompt, chosen, rejectd); did you mean data.columns.rejected=rejectd?",
    ),
    (
        {"prompt": "Double 1.", "chosen": 2, "rejected": "11"},
        "column 'chosen' must be text or a list of messages, got int",
    ),
    (
        {"prompt": "Double 1.", "chosen": [user("2")], "rejected": "11"},
        "'chosen' has no assistant turn after the prompt",
    ),
    (
        {"prompt": "x" * 300, "chosen": "2", "rejected": "11"},
        "so data.max_seq_len=128 leaves nothing of the chosen answer to score; raise data.max_seq_len or shorten",
    ),
]


@pytest.mark.parametrize("row,message", BAD, ids=[m[:30] for _, m in BAD])
def test_bad_preference_rows_are_named_in_one_line_or_skipped(row, message, tmp_path):
    good = SHAPES["plain"]
    path = write_rows(tmp_path / "pairs.jsonl", good[:3] + [row] + good[3:])
    overrides = (f"data.path={path}", "method=dpo", "data.max_seq_len=128")
    with pytest.raises(FtlabError) as e:
        prepare(tmp_path, *overrides)
    assert str(e.value).startswith(f"{path}:4: ") and message in str(e.value)
    assert "data.skip_bad_rows=true" in str(e.value) and "\n" not in str(e.value)
    ft = prepare(tmp_path, *overrides, "data.skip_bad_rows=true")
    assert len(ft.prepared.skipped) == 1 and message in ft.prepared.skipped[0]
    assert sum(len(s.items) for s in ft.prepared.splits.values()) == 6


def test_bad_kto_label_is_named(tmp_path):
    rows = [{"prompt": "Double 1.", "completion": "2", "label": "maybe"}] * 4
    with pytest.raises(FtlabError, match=r"k.jsonl:1: column 'label' must be true or false \(got 'maybe'\)"):
        prepare(tmp_path, f"data.path={write_rows(tmp_path / 'k.jsonl', rows)}", "method=kto")


def test_a_method_given_data_of_the_wrong_kind_names_the_format_it_needs(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"method=dpo trains on preference pairs: prompt, chosen, rejected .* this data is in the qa format",
    ):
        prepare(
            tmp_path,
            f"data.path={write_rows(tmp_path / 'qa.jsonl', [{'question': 'a', 'answer': 'b'}] * 4)}",
            "method=dpo",
        )
    with pytest.raises(
        ConfigError, match=r"method=sft trains on chat rows .* preference format; .* or train it with method=dpo"
    ):
        prepare(tmp_path, f"data.path={PAIRS}")


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["method=dpo", "method.beta=0"], "method.beta must be > 0 (got 0.0)"),
        (["method=dpo", "method.gamma=2"], "method.gamma is read by method=simpo only, and this run is method=dpo"),
        (["method=orpo", "method.beta=0.5"], "method.beta is read by method=dpo|grpo|kto|simpo only"),
        (
            ["method=dpo", "method.loss=ipo", "method.label_smoothing=0.1"],
            "method.label_smoothing applies to method.loss=sigmoid only",
        ),
        (["method=simpo", "data.packing=true"], "method=simpo compares whole answers: data.packing=false"),
    ],
)
def test_method_options_are_validated(overrides, message):
    with pytest.raises(ConfigError) as e:
        FineTune(compose(["model=tiny", f"data.path={PAIRS}", *overrides]))
    assert message in str(e.value)


# ── training ─────────────────────────────────────────────────────────────────────────────────────────────────
def tiny_preference(cache_dir, *overrides) -> list:
    return [
        "model=tiny",
        f"data.path={PAIRS}",
        "data.val_size=8",
        "data.batch_size=4",
        "trainer.max_steps=10",
        "optim.lr=3e-3",
        "trainer.precision=32-true",
        "trainer.checkpoint_every_n_steps=2",
        "trainer.log_every_n_steps=1",
        f"cache_dir={cache_dir}",
        *overrides,
    ]


def logged(run_dir, column: str) -> list:
    with open(run_dir / "logs" / "metrics.csv") as f:
        return [(int(r["step"]), float(r[column])) for r in csv.DictReader(f) if r.get(column)]


@pytest.mark.parametrize("method", ["dpo", "dpo-ipo", "dpo-hinge", "orpo", "simpo", "kto"])
def test_each_method_trains_and_logs_rewards(method, workdir, cache_dir):
    name, _, loss = method.partition("-")
    overrides = (
        [f"method={name}"] + ([f"method.loss={loss}"] if loss else []) + ([f"data.path={KTO}"] if name == "kto" else [])
    )
    stats = FineTune(compose(tiny_preference(cache_dir, *overrides))).run()
    run = run_dirs(workdir)[-1]
    assert stats["val_loss_after"] < stats["val_loss_before"]
    assert stats["val_accuracy_after"] > stats["val_accuracy_before"] or stats["val_accuracy_after"] == 1.0
    assert stats["val_margin_after"] > stats["val_margin_before"]
    assert json.loads((run / "metrics.json").read_text())["val_accuracy_after"] == stats["val_accuracy_after"]
    for column in ("train/loss", "train/rewards_chosen", "train/rewards_rejected", "train/margin", "train/accuracy"):
        assert len(logged(run, column)) == 10, column
    first, last = logged(run, "train/loss")[0][1], logged(run, "train/loss")[-1][1]
    assert last < first
    if name == "dpo":  # the adapter starts at zero, so the policy is the reference: margin 0, loss log 2 (sigmoid)
        assert stats["val_margin_before"] == 0.0 and stats["val_accuracy_before"] == 0.0
        if not loss:
            assert stats["val_loss_before"] == pytest.approx(math.log(2))


def test_the_reference_is_the_base_model_with_the_adapter_off(tmp_path, cache_dir):
    from ftlab.data.kinds import KINDS
    from ftlab.methods import METHODS
    from ftlab.train.module import LoRAModule

    ft = FineTune(compose(tiny_preference(cache_dir, "method=dpo")))
    source = ft.model_source()
    tokenizer = ft.load_tokenizer(source)
    items = ft.prepare_data(tokenizer).prepared.splits["train"].items[:3]
    batch = KINDS.get("pair").collate(items, tokenizer.pad_token_id)
    base = ft.load_base_model(source).eval()
    with torch.no_grad():  # the bare base model's summed log-probs of the labelled tokens, by hand
        logps = torch.log_softmax(base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    by_hand = (logps[:, :-1].gather(2, targets.clamp(min=0).unsqueeze(2)).squeeze(2) * mask).sum(1)
    model = ft.get_peft_model(base)
    with torch.no_grad():  # an adapter that changes the outputs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    module = LoRAModule(
        model,
        METHODS.get("dpo"),
        dpo.Options(),
        lr=1e-3,
        weight_decay=0.0,
        betas=(0.9, 0.999),
        optimizer="adamw",
        scheduler="constant",
        warmup_steps=0,
        min_lr_ratio=0.0,
    )
    module.eval()
    reference, count = module.forward_pass.logps(batch, reference=True)
    policy, _ = module.forward_pass.logps(batch)
    assert torch.allclose(reference, by_hand, atol=1e-4)
    assert count.tolist() == mask.sum(1).tolist()
    assert (policy - reference).abs().min() > 1e-3  # the adapter is on outside the reference pass


def test_an_interrupted_dpo_run_resumes_and_retraces(workdir, cache_dir, capsys):
    from test_train import InterruptedRun, train_losses

    over = tiny_preference(cache_dir, "method=dpo", "trainer.max_steps=6", "lora.dropout=0.2")
    FineTune(compose(over)).run()
    (uninterrupted,) = run_dirs(workdir)
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        InterruptedRun(compose(over)).run()
    FineTune(compose(over + ["resume=last"])).run()
    resumed = run_dirs(workdir)[-1]
    assert [s for s, _ in train_losses(resumed)] == [2, 3, 4, 5]
    expected = dict(train_losses(uninterrupted))
    for step, loss in train_losses(resumed):
        assert loss == pytest.approx(expected[step], rel=1e-5)


@pytest.mark.process
def test_a_sweep_searches_method_beta_and_maximizes_preference_accuracy(workdir, cache_dir):
    result = run_cli(
        "-m",
        "sweep=dpo",
        "model=tiny",
        f"data.path={PAIRS}",
        "data.val_size=8",
        "trainer.max_steps=4",
        "trainer.precision=32-true",
        "hydra.sweeper.n_trials=2",
        f"cache_dir={cache_dir}",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import optuna

    study = optuna.load_study(study_name="dpo", storage=f"sqlite:///{workdir}/outputs/sweeps/optuna.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2 and all("method.beta" in t.params for t in trials)
    for t in trials:
        metrics = json.loads(
            (workdir / "outputs" / "sweeps" / "dpo" / f"trial-{t.number}" / "metrics.json").read_text()
        )
        assert t.value == metrics["val_accuracy_after"]


def test_preview_shows_the_prompt_once_and_both_answers_marked(tmp_path, capsys):
    from ftlab.preview import preview

    preview(["model=tiny", f"cache_dir={tmp_path}", "method=dpo", "data=demo_pairs"], n=1)
    out = capsys.readouterr().out
    pair = out.split("── pair 1: ")[1]
    head, prompt, chosen, rejected = pair.split("\n── pair 2")[0].split("\n", 3)[0], *pair.split("\n── ")[0:3]
    user = prompt.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    # the shared prompt once, ending where the answers start; then each answer, wholly scored
    assert prompt.split("──\n", 1)[1].endswith("<|im_start|>assistant\n")
    assert re.fullmatch(r"chosen: \[\[\d{4}-\d\d-\d\d<\|im_end\|>\]\]", chosen)
    assert rejected.split("\n")[0] == f"rejected: [[{user}<|im_end|>]]"
    assert re.match(r"prompt \d+ tokens; chosen 11 scored, rejected \d+ scored ──", head)


def test_evaluation_scores_preference_accuracy_of_base_and_tuned(workdir, cache_dir):
    overrides = ["method=dpo", "data.test_size=6", "eval.after_train=true", "generation.max_new_tokens=4"]
    stats = FineTune(compose(tiny_preference(cache_dir, *overrides))).run()
    run = run_dirs(workdir)[-1]
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["examples"] == 6
    for name in ("base", "tuned"):
        scores = report["scores"][name]
        assert 0 <= scores["preference_accuracy"] <= 1 and scores["exact_match"] is not None
    # the tuned model learnt to prefer the short sums over the restated questions
    assert stats["eval_preference_accuracy"] > stats["base_eval_preference_accuracy"]
    assert stats["eval_preference_margin"] > stats["base_eval_preference_margin"]
    table = (run / "eval" / "report.md").read_text()
    assert "| preference accuracy |" in table and "Preference accuracy: the share of pairs" in table
    card = (run / "README.md").read_text()
    assert "| preference accuracy, with this adapter |" in card and "| `method.beta` | 0.1 | method setting |" in card


def test_an_sft_run_is_evaluated_on_pairs(trained, tmp_path, capsys):
    from shutil import copytree

    run = copytree(trained, tmp_path / "run")
    result = run_main(f"run={run}", f"data.path={PAIRS}", "data.test_size=4", "generation.max_new_tokens=2",
                      module="ftlab.evaluate", capsys=capsys)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((run / "eval" / "report.json").read_text())
    assert set(report["scores"]["tuned"]) >= {"preference_accuracy", "preference_margin", "exact_match"}


def test_text_data_is_refused_for_evaluation_before_training(workdir, cache_dir, tmp_path):
    path = write_rows(tmp_path / "docs.jsonl", [{"text": f"Document {i} is here."} for i in range(12)])
    with pytest.raises(ConfigError, match="text data has none; its measure is the validation loss"):
        FineTune(
            compose(tiny_preference(cache_dir, f"data.path={path}", "eval.after_train=true", "data.test_size=2"))
        ).run()
    assert not (workdir / "outputs").exists() or not list((workdir / "outputs").glob("*/*/adapter"))


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["plain", "whole-no-prompt", "anthropic-hh"])
def test_pairs_score_exactly_the_answers_on_smollm2(shape, smollm2_source):  # noqa: F811
    from ftlab.data.formats import FORMATS
    from ftlab.model.load import load_tokenizer

    tok = load_tokenizer(*smollm2_source)
    data = SimpleNamespace(columns=compose(["model=tiny"]).data.columns, system_prompt=None, max_seq_len=512)
    preference = FORMATS.get("preference")
    for i, row in enumerate(SHAPES[shape]):
        pair = preference.parse(row, f"row {i}", data)
        x = preference.tokenize(tok, pair, data, f"row {i}")
        chosen, rejected = (
            scored_text(tok, x["input_ids"], x["labels"]),
            scored_text(tok, x["rejected_ids"], x["rejected_labels"]),
        )
        assert (chosen, rejected) == (f"{2 * i}{END}", f"{i}{i}{END}")
        # the prompt is tokenized as inference tokenizes it: the answer starts where generation would
        _, prompt_ids = chat.prompt_ids(tok, pair.prompt, "p", "assistant")
        assert x["input_ids"][: len(prompt_ids)] == prompt_ids == x["rejected_ids"][: len(prompt_ids)]


def scored_text(tok, ids, labels) -> str:
    return tok.decode([t for t, label in zip(ids, labels) if label != IGNORE])


@pytest.mark.parametrize(
    "objective,minimize,reported",
    [
        ("val_loss_after", True, "val/loss"),
        ("val_accuracy_after", False, "val/accuracy"),
        ("val_margin_after", False, "val/margin"),
        ("eval_rouge_l", True, "val/loss"),
        ("eval_rouge_l", False, None),  # the loss would make a maximizing pruner stop the best trials
    ],
)
def test_pruning_reports_the_validation_metric_the_objective_names(objective, minimize, reported):
    from ftlab.sweeps.pruning import reported_metric

    assert reported_metric(objective, minimize) == reported


@pytest.mark.process
def test_dpo_composes_with_qlora_mlflow_and_export(workdir, cache_dir):
    from mlflow import MlflowClient

    over = tiny_preference(cache_dir, "method=dpo", "quant=4bit", "tracker=mlflow", "trainer.max_steps=4")
    stats = FineTune(compose(over)).run()
    run = run_dirs(workdir)[-1]
    assert stats["val_accuracy_after"] >= stats["val_accuracy_before"]
    client = MlflowClient(f"sqlite:///{workdir}/outputs/mlflow.db")
    (logged_run,) = client.search_runs([client.get_experiment_by_name("ftlab").experiment_id])
    for key in ("train/rewards_chosen", "train/margin", "val/accuracy"):
        assert client.get_metric_history(logged_run.info.run_id, key), key
    assert logged_run.data.params["method.name"] == "dpo" and logged_run.data.params["method.beta"] == "0.1"
    result = run_cli(f"run={run}", cwd=workdir, module="ftlab.export")  # the 4-bit base dequantized, then merged
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "merged" / "config.json").is_file()


@pytest.mark.process
def test_two_ddp_ranks_train_dpo_as_one_process(workdir, cache_dir):
    # 33 training pairs in global batches of 8: the last holds one pair, so rank 1 trains on a filler there, which
    # must change nothing: each step's loss is the mean over its pairs on all ranks
    over = tiny_preference(cache_dir, "method=dpo", "data.val_size=10", "trainer.max_steps=6", "lora.dropout=0")
    single = FineTune(compose(over + ["data.batch_size=8"])).run()
    assert single["train_examples"] == 33
    result = run_cli(*over, "data.batch_size=4", "trainer.devices=2", "trainer.strategy=ddp", cwd=workdir,
                     env_extra={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = run_dirs(workdir)
    for column in ("train/loss", "train/accuracy", "train/margin"):
        expected = dict(logged(one, column))
        got = dict(logged(two, column))
        assert sorted(got) == sorted(expected) == list(range(6))
        for step, value in expected.items():
            assert got[step] == pytest.approx(value, rel=1e-4, abs=1e-6), (column, step)
    ddp = json.loads((two / "metrics.json").read_text())
    assert ddp["val_accuracy_after"] == pytest.approx(single["val_accuracy_after"])
    assert ddp["val_loss_after"] == pytest.approx(single["val_loss_after"], rel=1e-4)
