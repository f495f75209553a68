"""Labels cover exactly the trained assistant turns and their end-of-turn markers, for every shipped template
and for SmolLM2's own, in every train_on mode."""

import pytest

from conftest import CHAT
from ftlab import FineTune, compose
from ftlab.data import templates
from ftlab.data.chat import IGNORE, tokenize_conversation
from ftlab.model.source import byte_tokenizer
from ftlab.utils.errors import FtlabError

MULTI_TURN = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy? Answer with a full sentence."},
    {"role": "assistant", "content": "The capital of Italy is Rome."},
]
ANSWERS = ["Paris.", "The capital of Italy is Rome."]
END_OF_TURN = {
    "chatml": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "gemma": "<end_of_turn>",
    "mistral": "eos",
    "own": "<|im_end|>",
}
CONVERSATIONS = pytest.mark.parametrize("messages", [MULTI_TURN, MULTI_TURN[1:]], ids=["system", "no-system"])
TRAIN_ON = pytest.mark.parametrize("train_on", ["assistant", "last_assistant"])


def supervised_runs(tokenizer, example):
    """Decode each maximal run of supervised tokens."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label != IGNORE:
            assert label == token  # labels are the tokens themselves; the model shifts them
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def expected_runs(tokenizer, template, train_on):
    end = tokenizer.eos_token if END_OF_TURN[template] == "eos" else END_OF_TURN[template]
    runs = [answer + end for answer in ANSWERS]
    return runs[-1:] if train_on == "last_assistant" else runs


def with_template(tokenizer, template):
    if template != "own":
        tokenizer.chat_template = templates.read(template)
    return tokenizer


@pytest.mark.parametrize("template", templates.shipped())
@CONVERSATIONS
@TRAIN_ON
def test_labels_are_exactly_assistant_contents_and_end_of_turn_byte_tokenizer(template, messages, train_on):
    tok = with_template(byte_tokenizer(), template)
    example = tokenize_conversation(tok, messages, 4096, "test", train_on)
    assert supervised_runs(tok, example) == expected_runs(tok, template, train_on)


@pytest.fixture(scope="session")
def smollm2_source(cache_dir):
    from ftlab.model.source import resolve_source

    cfg = compose(["model=smollm2", f"cache_dir={cache_dir}"])
    return resolve_source(cfg.model, str(cache_dir), cfg.seed), cfg.model


@pytest.mark.slow
@pytest.mark.parametrize("template", ["own"] + templates.shipped())
@CONVERSATIONS
@TRAIN_ON
def test_labels_are_exactly_assistant_contents_and_end_of_turn_smollm2(template, messages, train_on, smollm2_source):
    from ftlab.model.load import load_tokenizer

    tok = with_template(load_tokenizer(*smollm2_source), template)
    example = tokenize_conversation(tok, messages, 4096, "test", train_on)
    assert supervised_runs(tok, example) == expected_runs(tok, template, train_on)
    if template == "own" and messages[0]["role"] != "system":
        # SmolLM2's template adds its own system prompt then; it is context, never a label
        assert "You are a helpful AI assistant" in tok.decode(example["input_ids"])


def test_train_on_all_supervises_the_whole_rendered_text():
    tok = byte_tokenizer()
    example = tokenize_conversation(tok, MULTI_TURN, 4096, "test", "all")
    assert supervised_runs(tok, example) == [tok.apply_chat_template(MULTI_TURN, tokenize=False)]


def test_template_that_refuses_a_conversation_names_the_row(tmp_path):
    refusing = tmp_path / "strict.jinja"
    refusing.write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system "
        "role') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    tok = with_template(byte_tokenizer(), str(refusing))
    with pytest.raises(FtlabError, match="row 3: the chat template refuses this conversation .*no system role"):
        tokenize_conversation(tok, MULTI_TURN, 4096, "row 3", "assistant")


def test_truncation_keeps_partial_answers_and_drops_fully_cut_ones():
    tok = byte_tokenizer()
    full = tokenize_conversation(tok, MULTI_TURN, 1024, "test", "assistant")
    first_answer_end = max(i for i, label in enumerate(full["labels"][:120]) if label != IGNORE) + 1
    cut = tokenize_conversation(tok, MULTI_TURN, first_answer_end, "test", "assistant")
    assert supervised_runs(tok, cut) == ["Paris.<|im_end|>"]
    assert tokenize_conversation(tok, MULTI_TURN, 20, "test", "assistant") is None  # only the prompt survives


def test_dropped_examples_are_counted(workdir, tiny):
    ft = FineTune(compose(tiny + ["data.max_seq_len=60"]))
    ft.stats = ft.prepare_data(byte_tokenizer()).stats
    rows = len(CHAT.read_text().splitlines())
    assert ft.stats["dropped_examples"] > 0
    assert (
        ft.stats["train_examples"] + ft.stats["val_examples"] + ft.stats["test_examples"] + ft.stats["dropped_examples"]
        == rows
    )


def test_base_model_without_a_template_needs_one_configured(tmp_path):
    tok = byte_tokenizer()
    tok.chat_template = None
    with pytest.raises(
        FtlabError,
        match="the tokenizer of base-model has no chat template .*set data.chat_template "
        "to one of chatml, gemma, llama3, mistral or a path to a .jinja file",
    ):
        templates.apply(tok, None, "base-model")
    templates.apply(tok, "gemma", "base-model")
    assert tok.chat_template == templates.read("gemma")
    own = tmp_path / "mine.jinja"
    own.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|im_end|>\n{% endfor %}")
    templates.apply(tok, str(own), "base-model")
    assert (
        tok.apply_chat_template(MULTI_TURN[1:3], tokenize=False) == "user: Capital of France?<|im_end|>\n"
        "assistant: Paris.<|im_end|>\n"
    )
    with pytest.raises(FtlabError, match="data.chat_template=nope: neither a shipped template"):
        templates.apply(tok, "nope", "base-model")


def test_the_template_used_in_training_is_saved_with_the_adapter(workdir, tiny):
    from transformers import AutoTokenizer

    ft = FineTune(compose(tiny + ["data.chat_template=llama3", "trainer.max_steps=1"]))
    result = ft.run()
    saved = AutoTokenizer.from_pretrained(result.run_dir / "adapter")
    assert saved.chat_template == templates.read("llama3")
    prompt = MULTI_TURN[:2]  # inference renders exactly the tokens training saw before the answer
    trained = ft.apply_chat_template(result.tokenizer, MULTI_TURN[:3], "row", None)
    first_label = next(i for i, label in enumerate(trained["labels"]) if label != IGNORE)
    rendered = saved.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert saved(rendered, add_special_tokens=False)["input_ids"] == trained["input_ids"][:first_label]
