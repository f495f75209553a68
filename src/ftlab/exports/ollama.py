"""The Ollama Modelfile written beside an exported model.gguf: `ollama create NAME -f Modelfile`.

Ollama builds prompts with a Go template (the Modelfile's TEMPLATE), not with the Jinja chat template training
used, so a model served without the right one sees prompts it was never trained on. ftlab writes a TEMPLATE for the
chat templates it knows, each shown by the tests to render what the Jinja template renders. A chat template is
recognised by what it renders, not by its text: it and each known kind's reference render the same probe
conversations, and the kind that agrees on every one is the chat template's. Anything else gets no TEMPLATE rather
than a guess; Ollama then matches the GGUF's own tokenizer.chat_template to its templates.

What the TEMPLATEs rely on in Ollama (its template/template.go, server/prompt.go, llm/llama_server.go):
- .Messages holds every message in order, system messages included, and .System their contents again (joined by a
  blank line); the TEMPLATEs read system messages from .Messages only, so nothing is written twice. Consecutive
  messages of one role are merged into one, their contents joined by a blank line.
- Ollama prepends the BOS token itself when the GGUF's tokenizer.ggml.add_bos_token is true, so no TEMPLATE writes
  it: the GGUF says true exactly when the chat template begins with bos_token (gguf_tokenizer.writes_bos; ftlab
  trains without special tokens added, so with the template's BOS only).
- A conversation that ends with an assistant message is continued: that message is left open (transformers'
  continue_final_message); after any other last message the assistant's turn is opened (add_generation_prompt).
- Ollama 0.30 and later render the GGUF's own tokenizer.chat_template instead (with llama.cpp's Jinja) when it
  mentions tools and the TEMPLATE does not, as ftlab's chatml does, unless OLLAMA_GO_TEMPLATE=1: without tools the
  prompts are the same.
"""

from typing import Dict, List, Optional

from jinja2 import TemplateError
from transformers.utils.chat_template_utils import render_jinja_template

from ftlab.data import templates
from ftlab.exports.gguf_tokenizer import writes_bos
from ftlab.utils.errors import FtlabError

KINDS = ("chatml", "llama3", "mistral", "gemma", "smollm2")
# SmolLM2-Instruct's own chat template (its tokenizer.chat_template): ChatML with a default system message
SMOLLM2_JINJA = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# stand-ins for the special tokens when none are given: text no template writes, so a template that writes the
# tokens literally, or leaves out bos_token, renders differently from the references
PROBE_BOS, PROBE_EOS = "<probe-bos>", "<probe-eos>"
MISTRAL_EOS = "</s>"  # what the mistral TEMPLATE writes after each answer: Mistral's eos_token, or the one given

_SYSTEM = {"role": "system", "content": "You answer in one word."}
_USER = {"role": "user", "content": "Is the sky blue?"}
_ANSWER = {"role": "assistant", "content": "Yes."}
_AGAIN = {"role": "user", "content": "And the sea?"}
# rendered with and without add_generation_prompt: a system message or none, first or later, one turn or several,
# and contents with line breaks and spaces at their ends (which a template that trims them changes)
PROBES: List[List[Dict[str, str]]] = [
    [_SYSTEM, _USER, _ANSWER, _AGAIN],
    [_USER, _ANSWER, _AGAIN],
    [_USER],
    [_SYSTEM, _USER, _ANSWER],
    [_USER, _ANSWER, _SYSTEM, _AGAIN],
    [{"role": "user", "content": " Two lines:\nsky, sea "}, {"role": "assistant", "content": "\nBlue, blue. "}],
]

# Each TEMPLATE walks .Messages: $last marks the last message, whose turn is left open when it is the assistant's and
# otherwise followed by the assistant's opening. `{{-` and `-}}` drop the line breaks that only lay the source out.
# gemma and mistral have no system turn: a system message goes into the next user turn, ahead of its content.
_RANGE = "{{- range $i, $_ := .Messages }}\n"
_CHATML = (
    _RANGE
    + """{{- $last := eq (len (slice $.Messages $i)) 1 }}<|im_start|>{{ .Role }}
{{ .Content }}
{{- if not $last }}<|im_end|>
{{ else if ne .Role "assistant" }}<|im_end|>
<|im_start|>assistant
{{ end }}
{{- end -}}
"""
)
# SmolLM2's is ChatML that opens with its default system message when the conversation brings none
_SMOLLM2_SYSTEM = """{{- if and (eq $i 0) (ne .Role "system") }}<|im_start|>system
You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
{{ end }}
"""
TEMPLATES = {
    "chatml": _CHATML,
    "smollm2": _CHATML.replace(_RANGE, _RANGE + _SMOLLM2_SYSTEM, 1),
    "llama3": """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}
{{- if not $last }}<|eot_id|>
{{- else if ne .Role "assistant" }}<|eot_id|><|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end -}}
""",
    "gemma": """{{- $system := "" }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "system" }}{{ $system = .Content }}
{{- else if eq .Role "user" }}<start_of_turn>user
{{ if $system }}{{ $system }}

{{ end }}{{ $system = "" }}{{ .Content }}<end_of_turn>
{{ else }}<start_of_turn>model
{{ .Content }}
{{- if or (not $last) (ne .Role "assistant") }}<end_of_turn>
{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<start_of_turn>model
{{ end }}
{{- end -}}
""",
    "mistral": """{{- $system := "" }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "system" }}{{ $system = .Content }}
{{- else if eq .Role "user" }}[INST] {{ if $system }}{{ $system }}

{{ end }}{{ $system = "" }}{{ .Content }} [/INST]
{{- else }}{{ .Content }}
{{- if or (not $last) (ne .Role "assistant") }}</s>{{ end }}
{{- end }}
{{- end -}}
""",
}
# the end-of-turn markers, as stop strings: they stop generation even where the vocabulary lacks them as tokens
STOPS = {"chatml": ["<|im_end|>"], "smollm2": ["<|im_end|>"], "llama3": ["<|eot_id|>"], "gemma": ["<end_of_turn>"]}


def reference(kind: str) -> str:
    """The Jinja chat template a kind's TEMPLATE reproduces."""
    return SMOLLM2_JINJA if kind == "smollm2" else templates.read(kind)


def render(chat_template: str, messages: list, bos_token: Optional[str], eos_token: Optional[str], **how) -> str:
    """`messages` through the Jinja chat template, as the tokenizer's apply_chat_template renders them (a token
    that is None is left undefined, as a tokenizer without it leaves it). `how`: add_generation_prompt or
    continue_final_message."""
    tokens = {k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token)) if v is not None}
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=chat_template, **how, **tokens)
    return rendered[0]


def _renderings(chat_template: str, bos_token: Optional[str], eos_token: Optional[str]) -> Optional[list]:
    try:
        return [
            render(chat_template, p, bos_token, eos_token, add_generation_prompt=g)
            for p in PROBES
            for g in (True, False)
        ]
    except (TemplateError, TypeError, ValueError):  # refuses a probe (raise_exception) or fails on one: not a kind
        return None


def template_kind(
    chat_template: str, bos_token: Optional[str] = PROBE_BOS, eos_token: Optional[str] = PROBE_EOS
) -> Optional[str]:
    """Which Ollama TEMPLATE ftlab has for this Jinja chat template: 'chatml', 'llama3', 'mistral', 'gemma',
    'smollm2', or None. Give the tokenizer's bos and eos tokens where known (None: the tokenizer has none)."""
    got = _renderings(chat_template, bos_token, eos_token)
    if got is None:
        return None
    return next((k for k in KINDS if _renderings(reference(k), bos_token, eos_token) == got), None)


def modelfile(
    gguf_name: str, chat_template: str, generation, bos_token: Optional[str], eos_token: Optional[str] = MISTRAL_EOS
) -> str:
    """The Modelfile text for `gguf_name` beside it: FROM, the TEMPLATE and stop strings of the chat template's kind
    (none for a template ftlab does not know), and PARAMETER lines for the run's generation settings (fields
    max_new_tokens, do_sample, temperature, top_p, top_k, repetition_penalty). bos_token, eos_token: the
    tokenizer's (None: it has none); the mistral TEMPLATE writes eos_token after each answer."""
    if not gguf_name or any(c in gguf_name for c in '/\\\r\n"'):
        raise FtlabError(
            f"GGUF file name {gguf_name!r}: give a file name alone (model.gguf), the Modelfile's neighbour"
        )
    kind = template_kind(chat_template, bos_token, eos_token)
    lines = [f"# Ollama Modelfile for {gguf_name}. Use: ollama create NAME -f Modelfile, then: ollama run NAME"]
    lines += [f"FROM ./{gguf_name}", ""]
    if kind is None:
        lines += [
            f"# No TEMPLATE: ftlab has one for the chat templates {', '.join(KINDS)}; this one renders prompts",
            f"# unlike each. Ollama then takes the chat template from {gguf_name} itself: it reads",
            "# tokenizer.chat_template and matches it to its own templates (check the prompts it builds).",
        ]
    else:
        body, stops = TEMPLATES[kind], STOPS.get(kind, [eos_token] if eos_token else [])
        if kind == "mistral":
            body = body.replace(MISTRAL_EOS, eos_token)  # recognised as mistral, it renders with an eos_token
        lines.append(f"# The chat template ({kind}) in Ollama's template language; it renders what training rendered.")
        if writes_bos(chat_template) and bos_token:  # the rule model.gguf's add_bos_token is written by
            lines.append(
                f"# It begins with the BOS token {bos_token}, which Ollama adds itself ({gguf_name} has "
                "tokenizer.ggml.add_bos_token=true); TEMPLATE leaves it out."
            )
        elif bos_token:
            lines.append(
                f"# It does not begin with bos_token, and Ollama adds none ({gguf_name} has "
                "tokenizer.ggml.add_bos_token=false)."
            )
        lines.append(f'TEMPLATE """{body}"""')
        lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines + [""] + _parameters(generation)) + "\n"


def _parameters(g) -> List[str]:
    """PARAMETER lines for ftlab's generation settings (its GenerationOptions)."""
    lines = ["# the run's generation settings (generation.*)", f"PARAMETER num_predict {int(g.max_new_tokens)}"]
    if not g.do_sample:
        lines += [
            "# greedy (do_sample=false): temperature 0 makes Ollama take the likeliest token",
            "PARAMETER temperature 0",
        ]
    else:
        lines += [f"PARAMETER temperature {float(g.temperature)}", f"PARAMETER top_p {float(g.top_p)}"]
        if g.top_k == 0:
            lines.append("# top_k=0 is no limit in ftlab; Ollama's samplers, like llama.cpp's, skip top-k when k <= 0")
        lines.append(f"PARAMETER top_k {int(g.top_k)}")
    lines.append(f"PARAMETER repeat_penalty {float(g.repetition_penalty)}")
    if g.repetition_penalty != 1:  # transformers penalises every token of the text, Ollama the last 64 unless told
        lines.append("PARAMETER repeat_last_n -1")
    return lines
