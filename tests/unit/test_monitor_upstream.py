"""The sidecar's upstream client against a real (local) HTTP server."""

from __future__ import annotations

import asyncio

import pytest

from mlmodel_operator.monitor.upstream import UpstreamError, UpstreamPool


async def serve(handler) -> tuple[asyncio.AbstractServer, int]:  # type: ignore[no-untyped-def]
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def test_stale_keep_alive_connection_is_replaced() -> None:
    """A server that closes each connection after one answer, without saying so."""

    async def main() -> list[bytes]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        server, port = await serve(handler)
        pool = UpstreamPool("127.0.0.1", port)
        bodies = []
        for _ in range(3):
            response = await pool.request("POST", "/infer", [], b"{}")
            bodies.append(await response.read())
            await asyncio.sleep(0.05)  # let the close arrive
        await pool.close()
        server.close()
        return bodies

    assert asyncio.run(main()) == [b"ok", b"ok", b"ok"]


def test_chunked_answers_and_no_body_statuses() -> None:
    async def main() -> tuple[bytes, int, bytes]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await read_request(reader)
            if request.startswith(b"GET /chunked"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
                )
            await writer.drain()
            request = await read_request(reader)
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

        server, port = await serve(handler)
        pool = UpstreamPool("127.0.0.1", port)
        chunked = await (await pool.request("GET", "/chunked", [], b"")).read()
        empty = await pool.request("DELETE", "/x", [], b"")
        body = await empty.read()
        await pool.close()
        server.close()
        return chunked, empty.status, body

    assert asyncio.run(main()) == (b"abcde", 204, b"")


def test_refused_connection_is_an_upstream_error() -> None:
    async def main() -> None:
        server, port = await serve(lambda r, w: None)
        server.close()
        await server.wait_closed()
        await UpstreamPool("127.0.0.1", port).request("GET", "/", [], b"")

    with pytest.raises(UpstreamError, match="cannot connect"):
        asyncio.run(main())
