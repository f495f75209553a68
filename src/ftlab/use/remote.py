"""A model behind an OpenAI-compatible API (llama.cpp's llama-server, Ollama, vLLM, ftlab.serve, a hosted judge),
talked to through the official `openai` client.

`connect` checks the server before anything is computed or written: it answers, its /v1/models lists the model
(or names the first one), the key is accepted; each failure is one FtlabError line naming the option to fix.
`chat` then sends many conversations with a few requests in flight, in order of the inputs.
"""

import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, List, Optional

from tqdm import tqdm

from ftlab.utils.errors import FtlabError, first_line


@dataclass
class Remote:
    url: str
    model: str
    """The model name every request asks for."""
    option: str
    """The option that named the URL (endpoint, judge.endpoint), for error messages."""
    api_key_env: str
    client: object
    """An openai.OpenAI client for `url`."""


def connect(url: str, model: Optional[str], api_key_env: str, timeout: float, option: str) -> Remote:
    """The client for `url`, checked against the server's model list."""
    import openai

    key = os.environ.get(api_key_env) or "none"  # servers without keys take any; the key itself is never written
    client = openai.OpenAI(base_url=url, api_key=key, timeout=timeout, max_retries=1)
    try:
        served = [m.id for m in client.models.list().data]
    except Exception as e:
        raise _error(e, url, option, api_key_env) from None
    if not served:
        raise FtlabError(f"{option}={url}: the server lists no model in /v1/models; load one into it first")
    if model is None:
        return Remote(url, served[0], option, api_key_env, client)
    if model not in served:
        name = f"{option.partition('.')[0]}.model"  # endpoint -> endpoint.model, judge.endpoint -> judge.model
        raise FtlabError(
            f"{name}={model}: the server at {url} serves {', '.join(served[:10])}; set {name} to one of them"
        )
    return Remote(url, model, option, api_key_env, client)


def chat(
    remote: Remote,
    conversations: List[List[dict]],
    settings: dict,
    concurrency: int,
    label: str,
    done: Optional[Callable[[int, str], None]] = None,
) -> List[str]:
    """The assistant's reply to each conversation, in order; `settings`: max_tokens, temperature, top_p, seed;
    `done(i, reply)` is called as each reply arrives (a cache keeps what was paid for, if a later one fails)."""

    def one(i: int) -> str:
        try:
            reply = remote.client.chat.completions.create(model=remote.model, messages=conversations[i], **settings)
        except Exception as e:
            raise _error(e, remote.url, remote.option, remote.api_key_env) from None
        text = (reply.choices[0].message.content or "").strip() if reply.choices else ""
        if done is not None:
            done(i, text)
        return text

    bar = tqdm(total=len(conversations), desc=label, unit="request", file=sys.stderr, dynamic_ncols=True)
    replies: List[Optional[str]] = [None] * len(conversations)
    with ThreadPoolExecutor(concurrency) as pool:
        futures = {pool.submit(one, i): i for i in range(len(conversations))}
        try:
            for future in as_completed(futures):
                replies[futures[future]] = future.result()
                bar.update(1)
        except BaseException:
            for future in futures:  # stop what has not started; the requests in flight finish on their own
                future.cancel()
            raise
        finally:
            bar.close()
    return replies


def _error(e: Exception, url: str, option: str, api_key_env: str) -> FtlabError:
    """One line for what went wrong talking to the server, naming the option and the likely fix."""
    import openai

    if isinstance(e, openai.APITimeoutError):
        return FtlabError(f"{option}={url}: no answer within the timeout; raise {option.partition('.')[0]}.timeout")
    if isinstance(e, openai.APIConnectionError):
        cause = first_line(e.__cause__, 120) if e.__cause__ else first_line(e, 120)
        return FtlabError(
            f"{option}={url}: cannot connect ({cause}); start the server (llama-server, ollama serve, "
            "python -m ftlab.serve run=RUN) or fix the URL"
        )
    if isinstance(e, openai.AuthenticationError):
        return FtlabError(f"{option}={url}: the server refused the API key (401); set {api_key_env} to its key")
    if isinstance(e, openai.NotFoundError):
        return FtlabError(
            f"{option}={url}: not found (404); the URL should be the API's base, "
            "ending in /v1, e.g. http://127.0.0.1:8080/v1"
        )
    if isinstance(e, openai.APIStatusError):
        said = e.body.get("message") if isinstance(e.body, dict) else None  # the error object's own words
        return FtlabError(f"{option}={url}: the server answered {e.status_code}: {first_line(said or e, 200)}")
    return FtlabError(f"{option}={url}: {first_line(e, 200)}")


def settings(gen_cfg, seed: int, max_tokens: Optional[int] = None) -> dict:
    """A request's sampling settings from the run's generation.*: greedy is temperature 0."""
    out = {"max_tokens": max_tokens or gen_cfg.max_new_tokens, "seed": seed}
    if gen_cfg.do_sample:
        out.update(temperature=gen_cfg.temperature, top_p=gen_cfg.top_p)
    else:
        out.update(temperature=0.0)
    return out
