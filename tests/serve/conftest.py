"""One live server on the embedded reasoner, shared by every door's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live import KEY, ORIGIN, serving

from lynx_edge.runtime.engine import Engine
from lynx_edge.serve.app import ServerSettings, create_app


@pytest.fixture(scope="session")
def server() -> Iterator[dict]:
    engine = Engine(n_ctx=2048, parallel=3)
    app = create_app(engine, ServerSettings(api_key=KEY, max_queue=4, cors_origins=(ORIGIN,)))
    with serving(app) as base:
        yield {"base": base, "app": app, "engine": engine}
    engine.close()
