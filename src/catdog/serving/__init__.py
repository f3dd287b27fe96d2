"""`catdog serve`: a REST API and a web page over one `Predictor`.

    >>> from catdog.serving import serve
    >>> serve(port=8000, api_key="s3cret")      # blocks; Ctrl-C or SIGTERM finishes requests in flight

`create_app(predictor, Settings(...))` gives the ASGI app itself, for tests or another server.
"""

from __future__ import annotations

import os

from catdog.serving.app import Settings, create_app

__all__ = ["Settings", "create_app", "serve"]


def load_predictor(model=None, runtime: str = "auto"):
    """The one Predictor the server holds: `model` (default: the shipped one) on `runtime`."""
    from catdog.inference.predictor import Predictor

    return Predictor(model, runtime=runtime)


def serve(model=None, host: str = "127.0.0.1", port: int = 8000, runtime: str = "auto", **settings) -> None:
    """Loads the model once, then serves until interrupted; `settings` are `Settings` fields.

    `api_key` defaults to $CATDOG_API_KEY. Shutdown is graceful: uvicorn stops accepting,
    requests in flight are answered (up to 30 s), then the batcher drains. After SIGTERM it
    returns (exit status 0); see `catdog.serving.server.run`.
    """
    from catdog.serving.server import run

    settings.setdefault("api_key", os.environ.get("CATDOG_API_KEY") or None)
    settings["cors_origins"] = tuple(settings.get("cors_origins") or ())
    config = Settings(**settings)  # a wrong field name fails here, before the model loads
    run(create_app(load_predictor(model, runtime), config), host=host, port=port)
