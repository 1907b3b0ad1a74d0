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


def test_interim_answers_are_skipped_and_the_connection_stays_in_step() -> None:
    """100 Continue and 103 Early Hints come before the answer: taking one for the answer
    would leave the real one unread, to be taken for the answer to the next request."""

    async def main() -> list[tuple[int, bytes]]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for n in range(2):
                await read_request(reader)
                writer.write(
                    b"HTTP/1.1 100 Continue\r\n\r\n"
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                    + b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nanswer%d"
                    % n
                )
                await writer.drain()

        server, port = await serve(handler)
        pool = UpstreamPool("127.0.0.1", port)
        answers = []
        for _ in range(2):
            response = await pool.request("POST", "/infer", [], b"{}")
            answers.append((response.status, await response.read()))
        await pool.close()
        server.close()
        return answers

    assert asyncio.run(main()) == [(200, b"answer0"), (200, b"answer1")]


def test_an_answer_not_read_to_the_end_never_returns_to_the_pool() -> None:
    async def main() -> tuple[int, bytes]:
        connections = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            while True:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                await writer.drain()

        server, port = await serve(handler)
        pool = UpstreamPool("127.0.0.1", port)
        first = await pool.request("GET", "/", [], b"")
        first.abort()  # e.g. a timeout before the body was read
        second = await pool.request("GET", "/", [], b"")
        body = await second.read()
        await pool.close()
        server.close()
        return connections, body

    assert asyncio.run(main()) == (2, b"hello")


def test_header_bytes_pass_unchanged() -> None:
    """Request headers go out as the bytes the client sent (aiohttp decodes them as UTF-8 with
    surrogateescape); answer headers in UTF-8 come back as the same text."""

    async def main() -> tuple[bytes, list[tuple[str, str]], int | None, int]:
        received = b""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal received
            received = await read_request(reader)
            writer.write("HTTP/1.1 200 OK\r\nX-Price: 5 €\r\nContent-Length: 42\r\n\r\n".encode())
            await writer.drain()

        server, port = await serve(handler)
        pool = UpstreamPool("127.0.0.1", port)
        sent = b"5 \xe2\x82\xac and \xff".decode("utf-8", "surrogateescape")
        response = await pool.request("HEAD", "/", [("X-Note", sent)], b"")
        await response.read()
        await pool.close()
        server.close()
        return received, response.headers, response.declared_length, response.content_length

    received, headers, declared, to_read = asyncio.run(main())
    assert b"X-Note: 5 \xe2\x82\xac and \xff\r\n" in received
    assert ("X-Price", "5 €") in headers
    assert (declared, to_read) == (42, 0)  # HEAD: the length of the GET answer, no body
