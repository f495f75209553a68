"""An OpenAI-compatible HTTP API for a finished run (python -m ftlab.serve): /v1/models, /v1/chat/completions
(streamed as server-sent events with stream=true) and /v1/completions.

Two model names: the run's (the adapter on) and `base` (the same weights, adapter off). Chat prompts are rendered
with the run's chat template and tokenized as training tokenized them (Trained.prompt); a request's max_tokens,
temperature and top_p override the run's generation settings for that request only. One model answers one
request at a time (generation holds a lock), so concurrent clients queue and all get their answers. A bad request
gets OpenAI's error object ({"error": {"message", "type", "param", "code"}}) with the matching HTTP status.
"""

import hmac
import json
import threading
import time
import uuid
from contextlib import nullcontext
from typing import Optional

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from omegaconf import OmegaConf

from ftlab.data.chat import end_of_turn
from ftlab.use import generate


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code

    def response(self) -> JSONResponse:
        kind = "authentication_error" if self.status == 401 else "invalid_request_error"
        body = {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def create_app(trained, model, name: str, api_key: Optional[str] = None) -> FastAPI:
    """The API of `model` (a PEFT model, or a plain one without `base`) under `name`; `api_key`: required of
    clients as a Bearer token when set."""
    app = FastAPI(title="ftlab", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    tokenizer, cfg = trained.tokenizer, trained.cfg
    names = [name] + (["base"] if hasattr(model, "disable_adapter") else [])
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    created = int(time.time())

    @app.exception_handler(RequestError)
    async def _error(request, error: RequestError):
        return error.response()

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise RequestError(401, "invalid or missing API key (Authorization: Bearer ...)", code="invalid_api_key")

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except ValueError:
            raise RequestError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise RequestError(400, "the request body must be a JSON object")
        model_name = data.get("model")
        if model_name not in names:
            raise RequestError(
                404, f"the model {model_name!r} does not exist; this server has {', '.join(names)}", "model",
                "model_not_found",
            )  # fmt: skip
        return data

    def settings(data: dict, prompt_len: int):
        gen = cfg.generation
        max_tokens = data.get("max_tokens", data.get("max_completion_tokens")) or gen.max_new_tokens
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(400, f"max_tokens must be a positive integer (got {max_tokens!r})", "max_tokens")
        if context is not None and prompt_len + max_tokens > context:
            raise RequestError(
                400, f"the prompt ({prompt_len} tokens) plus max_tokens ({max_tokens}) exceed the model's "
                f"{context}-token context; ask for fewer tokens", "max_tokens", "context_length_exceeded",
            )  # fmt: skip
        temperature = data.get("temperature")
        sample = gen.do_sample if temperature is None else temperature > 0
        changes = {"max_new_tokens": max_tokens, "do_sample": bool(sample), "batch_size": 1}
        if sample:
            changes["temperature"] = float(temperature if temperature is not None else gen.temperature)
            if data.get("top_p") is not None:
                changes["top_p"] = float(data["top_p"])
        return OmegaConf.merge(gen, changes)  # for this request; the run's own settings stay as they are

    def answer(data: dict, prompt: tuple, gen, streamer=None):
        """The answer to `prompt` with the request's generation settings `gen` (settings())."""
        # "base" is listed only for a model with an adapter to switch off
        with lock, model.disable_adapter() if data["model"] == "base" else nullcontext():
            return generate.answers(model, tokenizer, [prompt], gen, data.get("seed", cfg.seed), streamer=streamer)[0]

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        listed = [{"id": n, "object": "model", "created": created, "owned_by": "ftlab"} for n in names]
        return {"object": "list", "data": listed}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        authorize(request)
        data = await body(request)
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages or not all(_is_message(m) for m in messages):
            raise RequestError(
                400, "messages must be a non-empty list of {role, content} objects, roles system, user or assistant",
                "messages",
            )  # fmt: skip
        if messages[-1]["role"] not in ("user", "tool"):
            raise RequestError(400, "the last message must be a user turn: it is what the model answers", "messages")
        try:
            prompt = trained.prompt([{"role": m["role"], "content": m["content"]} for m in messages], "request")
        except Exception as e:  # the chat template refused the turns
            raise RequestError(400, f"messages: {e}", "messages") from None
        gen = settings(data, len(prompt[1]))  # refused now, before a stream starts
        rid, made = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if data.get("stream"):
            events = _stream(answer, data, prompt, gen, tokenizer, rid, made)
            return StreamingResponse(events, media_type="text/event-stream")
        got = await anyio.to_thread.run_sync(answer, data, prompt, gen)
        return {
            "id": rid,
            "object": "chat.completion",
            "created": made,
            "model": data["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": got.output},
                    "finish_reason": "length" if got.new_tokens >= gen.max_new_tokens else "stop",
                }
            ],
            "usage": _usage(len(prompt[1]), got.new_tokens),
        }

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        data = await body(request)
        text = data.get("prompt")
        if not isinstance(text, str) or not text:
            raise RequestError(400, "prompt must be a non-empty string", "prompt")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        gen = settings(data, len(ids))
        got = await anyio.to_thread.run_sync(answer, data, (text, ids), gen)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": data["model"],
            "choices": [{"index": 0, "text": got.output, "finish_reason": "stop", "logprobs": None}],
            "usage": _usage(len(ids), got.new_tokens),
        }

    return app


def _stream(answer, data: dict, prompt: tuple, gen, tokenizer, rid: str, made: int):
    """The answer as server-sent chat.completion.chunk events, each piece as it is generated."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    failure = []

    def work():
        try:
            answer(data, prompt, gen, streamer)
        except Exception as e:  # the client still gets an end
            failure.append(e)
            streamer.end()

    threading.Thread(target=work, daemon=True).start()

    def chunk(delta: dict, finish=None) -> str:
        event = {
            "id": rid, "object": "chat.completion.chunk", "created": made, "model": data["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }  # fmt: skip
        return f"data: {json.dumps(event)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    marker = end_of_turn(tokenizer)
    sent = ""
    for piece in streamer:
        text = sent + piece
        if marker and marker in text:
            text = text[: text.index(marker)]
        new = text[len(sent) :]
        if new:
            yield chunk({"content": new})
            sent = text
    yield chunk({}, "stop")
    yield "data: [DONE]\n\n"


def _is_message(m) -> bool:
    roles = ("system", "user", "assistant")
    return isinstance(m, dict) and m.get("role") in roles and isinstance(m.get("content"), str)


def _usage(prompt_tokens: int, new: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": new, "total_tokens": prompt_tokens + new}
