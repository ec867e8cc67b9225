"""The API's idle connections stay open for ``api_keep_alive_seconds``: a client that sends
on a connection the server has just closed sees a reset (vegeta saw one POST in 20,000
reset with uvicorn's default of 5 s)."""

from __future__ import annotations

import asyncio
import http.client
import time

import uvicorn
from fastapi import FastAPI

from api.workers import server_options
from streamrec.infra.processes import free_port
from streamrec.settings import Settings


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    return app


def _answered(connection: http.client.HTTPConnection) -> bool:
    """Send a request on ``connection``; True when a whole 200 response came back on it.
    ``http.client`` reads each response to its end and never opens a second connection
    while it holds one: a connection the server closed fails the request."""
    try:
        connection.request("GET", "/ping")
        response = connection.getresponse()
        return response.status == 200 and response.read() == b'{"ok":true}'
    except (OSError, http.client.HTTPException):  # reset, closed, or a broken pipe
        return False


async def _idle_then_send(keep_alive: int, idle: float) -> tuple[bool, bool]:
    port = free_port()
    options = server_options(Settings(api_port=port, api_keep_alive_seconds=keep_alive))
    server = uvicorn.Server(uvicorn.Config(_app(), **{**options, "log_level": "warning"}))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)

        def client() -> tuple[bool, bool]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                first = _answered(connection)
                time.sleep(idle)
                return first, _answered(connection)
            finally:
                connection.close()

        return await asyncio.to_thread(client)
    finally:
        server.should_exit = True
        await serving


def test_a_connection_idle_within_the_keep_alive_still_answers() -> None:
    assert asyncio.run(_idle_then_send(keep_alive=4, idle=2.0)) == (True, True)


def test_a_connection_idle_past_the_keep_alive_is_closed_by_the_server() -> None:
    # The same idle time with a shorter keep-alive: the setting is what kept it open above.
    assert asyncio.run(_idle_then_send(keep_alive=1, idle=2.0)) == (True, False)


def test_the_default_outlasts_common_client_idle_timeouts() -> None:
    assert server_options(Settings())["timeout_keep_alive"] > 60
