"""python -m ftlab.serve: a finished run behind an OpenAI-compatible API, talked to through the official `openai`
client: the same greedy answers as the library, streaming, the base model, errors, an API key, concurrent clients."""

import os
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from conftest import run_main, serving
from test_infer import library_answers

QUESTIONS = ["What is 2 plus 3?", "Name a fruit.", "Say hi.", "Count to three.", "What is the capital of France?"]


@pytest.fixture(scope="module")
def served(trained):
    """The trained run served on a free port in this process; (base URL, model name)."""
    os.environ["FTLAB_TEST_SERVE_KEY"] = "s3cret"
    with serving(trained, "generation.max_new_tokens=6", api_key_env="FTLAB_TEST_SERVE_KEY") as url:
        yield url, trained.name
    os.environ.pop("FTLAB_TEST_SERVE_KEY", None)


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0], api_key="s3cret", max_retries=0)


def ask(client, model: str, question: str, **kw) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], **kw)
    return reply.choices[0].message.content


def test_models_are_the_run_and_its_base(client, served):
    assert [m.id for m in client.models.list().data] == [served[1], "base"]


def test_chat_answers_as_the_library_does_with_the_adapter_and_without(client, served, trained):
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS[:2]]
    assert [ask(client, served[1], q) for q in QUESTIONS[:2]] == library_answers(trained, conversations)
    assert [ask(client, "base", q) for q in QUESTIONS[:2]] == library_answers(trained, conversations, base_only=True)


def test_streaming_gives_the_same_answer_in_pieces(client, served):
    stream = client.chat.completions.create(
        model=served[1], messages=[{"role": "user", "content": QUESTIONS[0]}], stream=True
    )
    chunks = [c.choices[0].delta.content or "" for c in stream]
    assert "".join(chunks).strip() == ask(client, served[1], QUESTIONS[0])
    assert len([c for c in chunks if c]) >= 1


def test_concurrent_clients_all_get_their_own_answers(client, served):
    expected = {q: ask(client, served[1], q) for q in QUESTIONS}
    with ThreadPoolExecutor(5) as pool:
        got = list(pool.map(lambda q: (q, ask(client, served[1], q)), QUESTIONS * 2))
    assert all(answer == expected[q] for q, answer in got)


def test_the_completions_endpoint_continues_text(client, served):
    reply = client.completions.create(model=served[1], prompt="Once upon a time", max_tokens=4)
    assert reply.choices[0].text is not None and reply.usage.completion_tokens <= 4


def test_bad_requests_get_openai_errors(client, served):
    with pytest.raises(openai.NotFoundError, match="the model 'gpt-4' does not exist; this server has"):
        ask(client, "gpt-4", "hi")
    with pytest.raises(openai.BadRequestError, match="messages must be a non-empty list"):
        client.chat.completions.create(model=served[1], messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="exceed the model's .*-token context"):
        ask(client, served[1], "hi", max_tokens=10**6)
    with pytest.raises(openai.AuthenticationError, match="invalid or missing API key"):
        openai.OpenAI(base_url=served[0], api_key="wrong", max_retries=0).models.list()


def test_a_bad_option_is_refused_in_one_line(capsys):
    result = run_main("run=x", "port=70000", module="ftlab.serve", capsys=capsys)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "port must be <= 65535" in result.stderr
