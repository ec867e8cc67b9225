"""The API's idle connections stay open for ``api_keep_alive_seconds``: a client that sends
on a connection the server has just closed sees a reset (vegeta saw one POST in 20,000
reset with uvicorn's default of 5 s)."""

from __future__ import annotations

import asyncio
import socket
import time

import uvicorn
from fastapi import FastAPI

from api.workers import server_options
from streamrec.infra.processes import free_port
from streamrec.settings import Settings

REQUEST = b"GET /ping HTTP/1.1\r\nHost: test\r\nConnection: keep-alive\r\n\r\n"


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    return app


def _answered(connection: socket.socket) -> bool:
    """Send a request on ``connection``; True when a whole 200 response came back on it.

    Read to the end of its body: uvicorn writes the head and the body separately, and on
    a busy machine they arrive apart (a body left unread would be taken for the next
    response)."""
    try:
        connection.sendall(REQUEST)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(4096)
            if not chunk:  # the server closed the connection
                return False
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            chunk = connection.recv(4096)
            if not chunk:
                return False
            body += chunk
        return head.startswith(b"HTTP/1.1 200") and len(body) == length
    except OSError:  # reset, or a broken pipe
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
            with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                first = _answered(connection)
                time.sleep(idle)
                return first, _answered(connection)

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
