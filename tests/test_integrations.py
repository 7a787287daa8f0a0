"""Lifespans: DESIGN.md item 19, with real servers on 127.0.0.1.

A FastAPI app runs under uvicorn (``uvicorn.Server`` on this test's loop,
serving a socket bound to a free port) and an aiohttp app under
``AppRunner`` + ``TCPSite``: the tree starts before the first request and
stops after the last, and the status route says 200 while it runs and 503
(with the error) once it crashed.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.responses import JSONResponse

import fluid
from fluid import WorkerState
from fluid.integrations import aiohttp as fluid_aiohttp
from fluid.integrations import health
from fluid.integrations import starlette as fluid_starlette

from .helpers import Idle, wait_until

with warnings.catch_warnings():
    # Starlette asks for httpx2 instead of httpx; the TestClient works with either.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

# ------------------------------------------------------------------ helpers


async def handle_job(job: str) -> None:
    if job == "crash":
        raise RuntimeError("job crashed")


def build_tree() -> fluid.Workers:
    """A tree whose ``jobs`` consumer fails (and so stops the tree) on the job ``crash``."""
    jobs = fluid.QueueConsumerWorker[str](handle_job, name="jobs", on_error="stop")
    return fluid.Workers(jobs, Idle(name="idle"), name="app_tree")


def send_job(tree: fluid.Worker, job: str) -> None:
    assert isinstance(tree, fluid.Workers)
    jobs = tree.find("jobs")[0]
    assert isinstance(jobs, fluid.QueueConsumerWorker)
    jobs.send(job)


@asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1; yield its URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started or task.done(), timeout=10)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def aiohttp_serving(app: web.Application) -> AsyncIterator[tuple[str, web.AppRunner]]:
    """Serve ``app`` with AppRunner + TCPSite on a free port of 127.0.0.1."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}", runner
    finally:
        if runner.server is not None:  # a test that cleaned up already checked the outcome
            await runner.cleanup()


# ------------------------------------------------------------ FastAPI, uvicorn


async def test_fastapi_under_uvicorn_runs_the_tree_and_reports_its_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trees: list[fluid.Worker] = []
    events: list[tuple[str, str]] = []

    def factory() -> fluid.Workers:
        trees.append(tree := build_tree())
        return tree

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append(("own lifespan entered", app.state.workers.worker_state))
        yield {"db": "connection"}
        events.append(("own lifespan left", app.state.workers.worker_state))

    app = FastAPI(lifespan=fluid_starlette.lifespan(factory, app_lifespan=own))
    app.router.routes.append(fluid_starlette.status_route("/status"))

    @app.post("/jobs/{job}")
    async def post_job(job: str, request: Request) -> dict[str, str]:
        send_job(request.app.state.workers, job)
        return {"db": request.state.db}

    assert trees == []  # nothing runs before the server starts
    async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        [tree] = trees
        assert tree.is_running()
        assert events == [("own lifespan entered", "running")]  # after the tree started

        response = await client.get("/status")
        assert response.status_code == 200
        body = response.json()
        assert (body["name"], body["state"], body["error"]) == ("app_tree", "running", None)
        assert [w["name"] for w in body["workers"]] == ["jobs", "idle"]

        response = await client.post("/jobs/hello")
        assert response.json() == {"db": "connection"}  # the app's own state is kept

        await client.post("/jobs/crash")
        await wait_until(tree.is_stopped)
        response = await client.get("/status")
        assert response.status_code == 503
        body = response.json()
        assert body["state"] == "stopped"
        assert body["error"] == "RuntimeError: job crashed"
        assert body["workers"][0]["error"] == "RuntimeError: job crashed"
    assert events[-1] == ("own lifespan left", "stopped")
    # the crash was raised again at shutdown: uvicorn reported it, it was not lost
    assert "Application shutdown failed" in caplog.text


async def test_the_fastapi_example_starts_and_stops_its_workers_with_uvicorn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from examples.fastapi_app import AppWorkers, app

    async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        workers = app.state.workers
        assert isinstance(workers, AppWorkers)
        assert workers.is_running()
        response = await client.post("/orders", json={"id": 7})
        assert response.json() == {"queued": 7, "region": "eu"}
        response = await client.get("/status")
        assert response.status_code == 200
        assert [w["name"] for w in response.json()["workers"]] == ["orders", "report"]
    assert workers.worker_state is WorkerState.STOPPED
    out = capsys.readouterr().out
    assert "app lifespan: 2 workers running" in out  # the app's own lifespan saw them run
    assert "stored order 7" in out
    assert "app lifespan: done" in out


# ------------------------------------------------------- Starlette lifespan


async def test_the_lifespan_composes_with_the_apps_own() -> None:
    tree = build_tree()
    seen: list[str] = []

    @asynccontextmanager
    async def own(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        seen.append(f"enter: tree {tree.worker_state}")
        yield {"db": "connection"}
        seen.append(f"exit: tree {tree.worker_state}")

    app = Starlette()
    async with fluid_starlette.lifespan(tree, app_lifespan=own)(app) as state:
        assert state == {"db": "connection", "workers": tree}
        assert app.state.workers is tree
        assert tree.is_running()
    assert seen == ["enter: tree running", "exit: tree running"]
    assert tree.worker_state is WorkerState.STOPPED


async def test_a_factory_makes_a_new_tree_at_each_startup() -> None:
    app = Starlette()
    lifespan = fluid_starlette.lifespan(build_tree, name="background")
    async with lifespan(app) as first:
        pass
    async with lifespan(app) as second:
        assert second["background"] is app.state.background
    assert first["background"] is not second["background"]


async def test_a_tree_that_fails_to_start_fails_the_app_startup() -> None:
    class NoDatabase(fluid.Worker):
        async def on_startup(self) -> None:
            raise ConnectionError("no database")

        async def run(self) -> None:
            raise AssertionError("never runs")

    entered: list[bool] = []

    @asynccontextmanager
    async def own(app: Starlette) -> AsyncIterator[None]:
        entered.append(True)
        yield

    with pytest.raises(ConnectionError, match="no database"):
        async with fluid_starlette.lifespan(NoDatabase(), app_lifespan=own)(Starlette()):
            raise AssertionError("the app must not serve")
    assert entered == []


async def test_an_app_lifespan_that_fails_stops_the_tree() -> None:
    tree = build_tree()

    @asynccontextmanager
    async def own(app: Starlette) -> AsyncIterator[None]:
        raise OSError("cache unreachable")
        yield

    with pytest.raises(OSError, match="cache unreachable"):
        async with fluid_starlette.lifespan(tree, app_lifespan=own)(Starlette()):
            raise AssertionError("the app must not serve")
    assert tree.worker_state is WorkerState.STOPPED


async def test_a_crash_while_serving_is_raised_at_shutdown() -> None:
    tree = build_tree()
    running = fluid_starlette.lifespan(tree)(Starlette())
    await running.__aenter__()
    send_job(tree, "crash")
    await wait_until(tree.is_stopped)
    with pytest.raises(RuntimeError, match="job crashed"):
        await running.__aexit__(None, None, None)


async def test_the_status_route_without_a_running_lifespan_is_503() -> None:
    app = Starlette(routes=[fluid_starlette.status_route("/health", name="background")])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert "did not start it" in response.json()["error"]


async def test_the_status_of_a_stopped_tree_is_503() -> None:
    tree = build_tree()
    async with tree:
        assert (await health(tree))[0] == 200
    code, body = await health(tree)
    assert code == 503
    assert (body["state"], body["error"]) == ("stopped", None)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"worker": 42}, TypeError),
        ({"worker": build_tree, "name": "not an identifier"}, ValueError),
        ({"worker": build_tree, "app_lifespan": 42}, TypeError),
    ],
)
def test_bad_lifespan_arguments_raise_at_the_call(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        fluid_starlette.lifespan(**kwargs)


# ------------------------------------------------------------------ aiohttp


async def post_job(request: web.Request) -> web.Response:
    send_job(request.app[fluid_aiohttp.WORKERS], request.match_info["job"])
    return web.json_response({"queued": True})


async def test_aiohttp_runs_the_tree_with_the_app_and_reports_its_crash() -> None:
    trees: list[fluid.Worker] = []

    def factory() -> fluid.Workers:
        trees.append(tree := build_tree())
        return tree

    app = web.Application()
    app.cleanup_ctx.append(fluid_aiohttp.cleanup_ctx(factory))
    app.router.add_get("/status", fluid_aiohttp.status_handler())
    app.router.add_post("/jobs/{job}", post_job)
    assert trees == []
    async with aiohttp_serving(app) as (url, runner), httpx.AsyncClient(base_url=url) as client:
        [tree] = trees
        assert tree.is_running()
        assert app[fluid_aiohttp.WORKERS] is tree
        response = await client.get("/status")
        assert response.status_code == 200
        assert response.json()["state"] == "running"

        await client.post("/jobs/crash")
        await wait_until(tree.is_stopped)
        response = await client.get("/status")
        assert response.status_code == 503
        assert response.json()["error"] == "RuntimeError: job crashed"
        with pytest.raises(RuntimeError, match="job crashed"):  # not lost at cleanup
            await runner.cleanup()


async def test_the_aiohttp_example_starts_and_stops_its_workers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from examples.aiohttp_app import AppWorkers, make_app

    app = make_app()
    async with aiohttp_serving(app) as (url, runner), httpx.AsyncClient(base_url=url) as client:
        workers = app[fluid_aiohttp.WORKERS]
        assert isinstance(workers, AppWorkers)
        assert workers.is_running()
        response = await client.post("/orders", json={"id": 3})
        assert response.json() == {"queued": 3}
        response = await client.get("/status")
        assert response.status_code == 200
        await runner.cleanup()
    assert workers.worker_state is WorkerState.STOPPED
    assert "stored order 3" in capsys.readouterr().out  # drained before the stop


async def test_the_aiohttp_status_handler_without_the_cleanup_ctx_is_503() -> None:
    app = web.Application()
    app.router.add_get("/status", fluid_aiohttp.status_handler())
    async with aiohttp_serving(app) as (url, _), httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/status")
    assert response.status_code == 503


def test_bad_aiohttp_arguments_raise_at_the_call() -> None:
    with pytest.raises(TypeError):
        fluid_aiohttp.cleanup_ctx(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AppKey"):
        fluid_aiohttp.cleanup_ctx(build_tree, key="workers")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AppKey"):
        fluid_aiohttp.status_handler("workers")  # type: ignore[arg-type]


# ------------------------------------- a second start: module-level workers
#
# Issue 14: a module-level consumer in a tree made by the factory failed at
# the app's second start (a second TestClient) with "already belongs to tree".

handled: list[str] = []


async def record(job: str) -> None:
    handled.append(job)


def jobs_app(factory: Callable[[], fluid.Worker]) -> FastAPI:
    """An app whose ``POST /jobs/{job}`` hands the job to the tree's ``jobs`` consumer."""
    app = FastAPI(lifespan=fluid_starlette.lifespan(factory))

    @app.post("/jobs/{job}")
    async def post_job(job: str, request: Request) -> dict[str, bool]:
        send_job(fluid_starlette.workers_of(request), job)
        return {"queued": True}

    return app


def test_a_module_level_consumer_in_a_factory_tree_serves_a_second_testclient() -> None:
    consumer = fluid.QueueConsumerWorker[str](record, name="jobs")  # made once, as at module level
    trees: list[fluid.Workers] = []

    def factory() -> fluid.Workers:
        trees.append(tree := fluid.Workers(consumer, Idle(name="idle"), name="app_tree"))
        return tree

    app = jobs_app(factory)
    handled.clear()
    for round in range(3):
        with TestClient(app) as client:
            assert client.post(f"/jobs/{round}").json() == {"queued": True}
        assert consumer.worker_state is WorkerState.STOPPED  # drained at each stop
    assert handled == ["0", "1", "2"]
    assert len(trees) == 3
    assert trees[-1].children[0] is consumer
    assert all(tree.worker_state is WorkerState.STOPPED for tree in trees)


def test_a_new_app_at_each_test_can_reuse_a_module_level_consumer() -> None:
    consumer = fluid.QueueConsumerWorker[str](record, name="jobs")
    handled.clear()
    for round in range(2):  # an app factory: a new app, a new lifespan each time
        app = jobs_app(lambda: fluid.Workers(consumer, name="app_tree"))
        with TestClient(app) as client:
            client.post(f"/jobs/{round}")
    assert handled == ["0", "1"]


def test_a_stopped_tree_keeps_its_workers_until_a_factory_needs_them() -> None:
    consumer = fluid.QueueConsumerWorker[str](record, name="jobs")
    app = jobs_app(lambda: fluid.Workers(consumer, name="app_tree"))
    with TestClient(app):
        first = fluid_starlette.workers_of(app, fluid.Workers)
    # after the app stopped, its tree is whole: a test can still look into it
    assert first.find("jobs") == [consumer]
    with TestClient(app):
        second = fluid_starlette.workers_of(app, fluid.Workers)
        assert second is not first
        assert second.find("jobs") == [consumer]
    assert first.children == ()  # let go when the second start needed its consumer


def test_a_factory_returning_the_same_tree_keeps_its_children() -> None:
    tree = build_tree()
    app = jobs_app(lambda: tree)  # a cached get_workers(), say
    for _ in range(2):
        with TestClient(app) as client:
            client.post("/jobs/hello")
            assert fluid_starlette.workers_of(app) is tree
            assert [w.worker_name for w in tree.children] == ["jobs", "idle"]
    assert tree.worker_state is WorkerState.STOPPED


def test_a_tree_that_failed_to_start_lets_its_workers_go_too() -> None:
    consumer = fluid.QueueConsumerWorker[str](record, name="jobs")
    attempts: list[int] = []

    class Flaky(Idle):
        async def on_startup(self) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionError("database not up yet")

    app = jobs_app(lambda: fluid.Workers(consumer, Flaky(name="flaky"), name="app_tree"))
    with pytest.raises(ConnectionError), TestClient(app):
        raise AssertionError("the app must not serve")
    with TestClient(app):  # the next try of the test suite, or of the orchestrator
        assert consumer.is_running()
    assert len(attempts) == 2


async def test_a_consumer_of_a_running_tree_is_not_taken_by_another_app() -> None:
    consumer = fluid.QueueConsumerWorker[str](record, name="jobs")
    first = fluid_starlette.lifespan(lambda: fluid.Workers(consumer, name="first"))
    second = fluid_starlette.lifespan(lambda: fluid.Workers(consumer, name="second"))
    async with first(Starlette()) as state:
        with pytest.raises(ValueError, match="already belongs to tree 'first'"):
            async with second(Starlette()):
                raise AssertionError("the second app must not start")
        assert state["workers"].children == (consumer,)  # still the first's
        assert consumer.is_running()


async def test_trees_nobody_uses_are_not_kept_alive() -> None:
    app = Starlette()
    factory = fluid_starlette.lifespan(lambda: fluid.Workers(fluid.Workers(name="inner")))
    async with factory(app) as state:
        tree = state["workers"]
    del state, app
    ref = weakref.ref(tree)
    del tree
    gc.collect()
    assert ref() is None


# -------------------------------------------- workers_of: the typed tree


class AppTree(fluid.Workers):
    def __init__(self) -> None:
        self.jobs = fluid.QueueConsumerWorker[str](record, name="jobs")
        super().__init__(self.jobs, name="app_tree")


async def test_workers_of_gives_the_tree_typed_from_a_request_or_the_app() -> None:
    app = Starlette()
    seen: list[AppTree] = []

    async def endpoint(request: Request) -> JSONResponse:
        tree = fluid_starlette.workers_of(request, AppTree)
        seen.append(tree)
        tree.jobs.send("typed")  # AppTree's own attribute, checked by mypy
        return JSONResponse({"name": tree.worker_name})

    app.add_route("/", endpoint)
    handled.clear()
    async with fluid_starlette.lifespan(AppTree)(app):
        assert isinstance(fluid_starlette.workers_of(app), AppTree)
        assert fluid_starlette.workers_of(app, AppTree) is app.state.workers
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.get("/")
        assert response.json() == {"name": "app_tree"}
        assert seen == [app.state.workers]
    assert handled == ["typed"]


def test_workers_of_without_the_lifespan_says_what_is_missing() -> None:
    app = Starlette()
    with pytest.raises(LookupError, match=r"no fluid worker named 'workers'.*lifespan"):
        fluid_starlette.workers_of(app)
    app.state.workers = Idle()
    with pytest.raises(TypeError, match=r"not a tests\.test_integrations\.AppTree"):
        fluid_starlette.workers_of(app, AppTree)
    with pytest.raises(TypeError, match="expected a request"):
        fluid_starlette.workers_of(42)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="identifier"):
        fluid_starlette.workers_of(app, name="not one")


async def test_aiohttp_workers_of_gives_the_tree_typed() -> None:
    app = web.Application()
    with pytest.raises(LookupError, match="cleanup_ctx"):
        fluid_aiohttp.workers_of(app)
    app.cleanup_ctx.append(fluid_aiohttp.cleanup_ctx(AppTree))

    async def endpoint(request: web.Request) -> web.Response:
        tree = fluid_aiohttp.workers_of(request, AppTree)
        return web.json_response({"name": tree.jobs.worker_path})

    app.router.add_get("/", endpoint)
    async with aiohttp_serving(app) as (url, _), httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/")).json() == {"name": "app_tree/jobs"}
        with pytest.raises(TypeError, match=r"not a tests\.helpers\.Idle"):
            fluid_aiohttp.workers_of(app, Idle)
    with pytest.raises(TypeError, match="expected an aiohttp request"):
        fluid_aiohttp.workers_of(Starlette())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="AppKey"):
        fluid_aiohttp.workers_of(app, key="workers")  # type: ignore[call-overload]


async def test_aiohttp_a_new_app_at_each_test_can_reuse_a_module_level_consumer() -> None:
    consumer = fluid.QueueConsumerWorker[str](record, name="jobs")
    handled.clear()
    for round in range(2):
        app = web.Application()
        app.cleanup_ctx.append(
            fluid_aiohttp.cleanup_ctx(lambda: fluid.Workers(consumer, name="app_tree"))
        )
        async with aiohttp_serving(app):
            consumer.send(str(round))
    assert handled == ["0", "1"]
