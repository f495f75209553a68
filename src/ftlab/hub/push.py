"""Publish a finished run to the Hugging Face Hub: adapter, tokenizer and model card in one commit.

A push happens after training, when a failure is most expensive, so: `preflight` checks the token before
training starts; transient failures (network, timeouts, 429, 5xx) are retried with doubling waits; and every
failure ends in one PublishError line that names the repo and the fix, never the token. A push only reads the
run dir, so a failed one can simply be repeated with `python -m ftlab.publish RUN_DIR`.
"""

import json
import os
import sys
import time
from http import HTTPStatus
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import yaml
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.utils import HFValidationError, LocalTokenNotFoundError, OfflineModeIsEnabled, validate_repo_id

from ftlab.hub import private
from ftlab.utils import secrets
from ftlab.utils.errors import FtlabError, first_line

LOGIN_FIX = "set HF_TOKEN or hub.token, or run `hf auth login`"
# exception classes, by HTTP client module, that mean the request never got an answer: worth retrying.
# huggingface_hub 2.x uses httpx2, 1.x httpx, older versions requests; only the one already imported is looked at
TRANSPORT_ERRORS = {
    "httpx2": ("TimeoutException", "NetworkError", "RemoteProtocolError"),
    "httpx": ("TimeoutException", "NetworkError", "RemoteProtocolError"),
    "requests": ("ConnectionError", "Timeout"),
}


class PublishError(FtlabError):
    """Pushing to the Hub failed; the message is one line naming the repo and what would fix it."""


def push(
    run_dir: Path,
    repo_id: str,
    *,
    private: bool,
    token: Optional[str],
    retries: int,
    retry_wait: float,
    log: Callable[[str], None],
) -> str:
    """Upload run_dir/adapter/* and run_dir/README.md (the card) to the root of `repo_id` in one commit, creating
    the repo if needed (an existing one keeps its visibility). Returns the repo URL. token=None:
    huggingface_hub's own lookup (HF_TOKEN, then the stored login)."""
    run_dir = Path(run_dir)
    _check_online()
    files = _files_to_push(run_dir)
    api = _api(token)
    failure = _Failure(
        api.endpoint,
        repo_id,
        token,
        doing="push to",
        again=f"the run's files are intact, push again with `python -m ftlab.publish {run_dir}`",
    )
    _check_repo_id(repo_id, failure)
    retry = _Retry(retries, retry_wait, log, "Hub upload", failure)
    url = retry(lambda: api.create_repo(repo_id, private=private, exist_ok=True))
    # operations are built afresh for each attempt: huggingface_hub records upload state on them
    retry(lambda: api.create_commit(repo_id, _operations(files), commit_message="Upload LoRA adapter (ftlab)"))
    return str(url)


def preflight(
    repo_id: Optional[str], token: Optional[str], *, retries: int, retry_wait: float, log: Callable[[str], None]
) -> str:
    """Check, before training, that a push to `repo_id` can work: network allowed, a valid repo id, a token the
    Hub accepts that is not read-only, so a bad token fails in seconds. Returns a line saying whose token it is."""
    _check_online()
    api = _api(token)
    failure = _Failure(
        api.endpoint,
        repo_id,
        token,
        doing="check the Hub token for",
        again="check the network, or train with hub.push=false and push later with `python -m ftlab.publish RUN_DIR`",
    )
    _check_repo_id(repo_id, failure)
    me = _Retry(retries, retry_wait, log, "Hub token check", failure)(api.whoami)
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":  # fine-grained tokens carry per-repo scopes the Hub checks at push time; read is never enough
        raise PublishError(f"the token is read-only and cannot write to {repo_id}: use a token with write access")
    return f"Hub token of {me.get('name', '?')} accepted; the adapter will be pushed to {repo_id}"


# ── the steps ─────────────────────────────────────────────────────────────────────────────────────────


def _check_online() -> None:
    # os.environ at call time: huggingface_hub.constants froze the value when it was imported
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes"):
        raise PublishError("hub.push needs the network but HF_HUB_OFFLINE=1 is set; unset it")


def _api(token: Optional[str]) -> HfApi:
    # read HF_ENDPOINT now, not at import like huggingface_hub.constants, so it can point at a mirror or test server
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)


def _files_to_push(run_dir: Path) -> List[Tuple[bytes, str]]:
    """(content, path in repo): adapter/* at the root, the run's card as README.md, and its config as
    ftlab_config.yaml, from which `python -m ftlab.infer run=<repo id>` rebuilds the base model as trained. Text
    files are the copies private.py makes: no local path of this machine reaches the Hub."""
    adapter, card = run_dir / "adapter", run_dir / "README.md"
    if not adapter.is_dir():
        raise PublishError(f"nothing to push: {adapter} is missing; push a finished run's dir (it has adapter/)")
    if not card.is_file():
        raise PublishError(f"{card} is missing: `python -m ftlab.publish {run_dir}` writes the card and pushes")
    # PEFT saves its own generic adapter/README.md; the run's card replaces it
    files = [
        (p, p.relative_to(adapter).as_posix())
        for p in sorted(adapter.rglob("*"))
        if p.is_file() and p.relative_to(adapter).as_posix() != "README.md"
    ]
    if not files:
        raise PublishError(f"nothing to push: {adapter} holds no files")
    config = run_dir / ".hydra" / "config.yaml"
    files += [(card, "README.md")] + ([(config, "ftlab_config.yaml")] if config.is_file() else [])
    saved = yaml.safe_load(config.read_text()) if config.is_file() else {}
    adapter_config = adapter / "adapter_config.json"
    base = json.loads(adapter_config.read_text()).get("base_model_name_or_path") if adapter_config.is_file() else None
    paths = private.local_paths(saved, extra=[str(run_dir.resolve())] + ([base] if private.is_local(base) else []))
    base_id = (saved.get("model") or {}).get("name")
    return [(_content(path, name, paths, base_id), name) for path, name in files]


def _content(path: Path, name: str, paths: List[str], base_id: Optional[str]) -> bytes:
    data = path.read_bytes()
    if name == "ftlab_config.yaml":
        return private.pushed_config(data.decode(), paths).encode()
    if name == "adapter_config.json":
        data = private.pushed_adapter_config(data.decode(), base_id).encode()
    try:
        return private.scrub_text(data.decode("utf-8"), paths).encode("utf-8")
    except UnicodeDecodeError:  # weights: no text in them
        return data


def _operations(files: List[Tuple[bytes, str]]) -> list:
    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for data, name in files]


def _check_repo_id(repo_id: Optional[str], failure: "_Failure") -> None:
    """Before any request: a missing or malformed repo id is a config mistake, not a Hub failure."""
    if not repo_id:
        raise PublishError(
            "no repo to push to: set hub.repo_id=your-name/your-model-lora "
            "(or pass --repo-id to python -m ftlab.publish)"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(failure.describe(e)) from e


# ── retries and messages ──────────────────────────────────────────────────────────────────────────────


class _Retry:
    """Call a Hub request, retrying transient failures with waits retry_wait, 2x, 4x ...; raise PublishError."""

    def __init__(self, retries: int, retry_wait: float, log: Callable[[str], None], what: str, failure: "_Failure"):
        self.retries, self.retry_wait, self.log, self.what, self.failure = retries, retry_wait, log, what, failure

    def __call__(self, request: Callable):
        for attempt in range(self.retries + 1):
            try:
                return request()
            except Exception as e:  # every failure becomes one PublishError line
                reason = transient_reason(e)
                if reason is None:
                    raise PublishError(self.failure.describe(e)) from e
                if attempt == self.retries:
                    raise PublishError(self.failure.exhausted(reason, self.retries)) from e
                wait = self.retry_wait * 2**attempt
                self.log(f"{self.what} failed ({reason}); retry {attempt + 1} of {self.retries} in {wait:g}s")
                time.sleep(wait)


def transient_reason(error: BaseException) -> Optional[str]:
    """A short description of `error` when retrying may help (no answer, a timeout, 429, 5xx), else None."""
    if isinstance(error, OfflineModeIsEnabled):  # a ConnectionError, but retrying cannot help
        return None
    status = http_status(error)
    if status is not None:
        return status_text(status) if status == 429 or status >= 500 else None
    transport = [ConnectionError, TimeoutError]
    for module, names in TRANSPORT_ERRORS.items():
        if module in sys.modules:
            transport += [getattr(sys.modules[module], n) for n in names if hasattr(sys.modules[module], n)]
    return type(error).__name__ if isinstance(error, tuple(transport)) else None


def http_status(error: BaseException) -> Optional[int]:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


class _Failure:
    """Turns a failure into the one line the user reads: the repo, what went wrong, what fixes it."""

    def __init__(self, endpoint: str, repo_id: str, token: Optional[str], doing: str, again: str):
        self.endpoint, self.repo_id, self.doing, self.again = endpoint, repo_id, doing, again
        self.token = token  # whichever token was used must never reach a message, even in a server's error text

    def exhausted(self, reason: str, retries: int) -> str:
        return self._clean(
            f"could not {self.doing} {self.repo_id}: {self.endpoint} still failing after {retries} "
            f"retries ({reason}); {self.again}"
        )

    def describe(self, error: Exception) -> str:
        repo, status = self.repo_id, http_status(error)
        if status == 401:
            message = f"the Hub rejected the token for {repo} (401 Unauthorized): {LOGIN_FIX}"
        elif status == 403:
            message = f"the token cannot write to {repo}: use a token with write access or a repo you own"
        elif status == 404:
            message = (
                f"{repo} was not found on {self.endpoint} (404 Not Found): check hub.repo_id "
                "(namespace/name) and that the token can create repos in that namespace"
            )
        elif status is not None:
            message = (
                f"could not {self.doing} {repo}: the Hub answered {status_text(status)} "
                f"({_first_line(error)}); fix the cause, then {self.again}"
            )
        elif isinstance(error, LocalTokenNotFoundError):
            message = f"no Hugging Face token found to push to {repo}: {LOGIN_FIX}"
        elif isinstance(error, OfflineModeIsEnabled):
            message = (
                f"could not {self.doing} {repo}: huggingface_hub was imported with HF_HUB_OFFLINE=1 set; "
                "unset it before starting ftlab"
            )
        elif isinstance(error, HFValidationError):
            message = f"'{repo}' is not a valid Hub repo id ({_first_line(error)}): use namespace/name"
        else:
            message = f"could not {self.doing} {repo} ({type(error).__name__}: {_first_line(error)}); {self.again}"
        return self._clean(message)

    def _clean(self, message: str) -> str:
        message = secrets.redact(message)  # every token the process holds
        return message.replace(self.token, secrets.MASK) if self.token else message


def _first_line(error: Exception) -> str:
    return first_line(error).rstrip(".")  # it goes inside parentheses
