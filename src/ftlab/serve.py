"""`python -m ftlab.serve run=RUN [host=127.0.0.1] [port=8000] [generation.*=...]`: a finished run behind an
OpenAI-compatible API, for any OpenAI client, chat UI or evaluation tool.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="RUN_NAME", messages=[{"role": "user", "content": "Hi"}])

The model names are the run's (the adapter on) and `base` (adapter off), listed by /v1/models. Prompts use the
run's chat template and its generation settings, which a request's max_tokens, temperature and top_p override.
With the environment variable named by api_key_env set, clients must send that key. Ctrl+C stops the server.
"""

from pathlib import Path
from typing import List, Optional

from ftlab.config.overrides import run_command
from ftlab.config.schema import ServeCommand
from ftlab.use import runs
from ftlab.utils.console import Stages, info, setup_logging

# torch, transformers and the server stack load inside serve(), once the command line is known to be good


def serve(options: ServeCommand, overrides: List[str], recipe_cls=None, started=None) -> None:
    """Serve until stopped; `started(url)` is called once the server listens (tests, notebooks)."""
    import asyncio
    import os

    import uvicorn

    from ftlab.train.recipe import FineTune
    from ftlab.train.trained import Trained
    from ftlab.use import server

    setup_logging(stream="stderr")
    stages = Stages(("Finding the run", "Loading the model", "Serving"))
    stages.start("Finding the run", options.run)
    run = runs.locate(options.run, overrides)
    trained = Trained(run, recipe_cls or FineTune)
    stages.start("Loading the model", run.cfg.model.name)
    model = trained.model()
    name = Path(run.label.rstrip("/")).name or run.label  # the run dir's name, as a client names the model
    key = os.environ.get(options.api_key_env) or None
    app = server.create_app(trained, model, name, api_key=key)
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", access_log=False)
    http = uvicorn.Server(config)
    stages.start("Serving", f"{options.host}:{options.port}")

    async def announce():
        while not http.started:
            await asyncio.sleep(0.05)
        port = http.servers[0].sockets[0].getsockname()[1]
        url = f"http://{options.host}:{port}/v1"
        info(f"OpenAI-compatible API at {url}; models: {name}, base" + ("; API key required" if key else ""))
        if started is not None:
            started(url, http)

    async def both():
        await asyncio.gather(http.serve(), announce())

    asyncio.run(both())
    stages.finish()


def main(argv: Optional[List[str]] = None) -> None:
    run_command(argv, ServeCommand, "ftlab.serve", "serve a run over an OpenAI-compatible API", serve)


if __name__ == "__main__":
    main()
