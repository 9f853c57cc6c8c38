"""A tiny HTTP backend for the churn reproducer: 6-byte answers, honours Connection: close."""

import asyncio
import sys

RESP_KA = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"
RESP_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n"


class H(asyncio.Protocol):
    def connection_made(self, t: asyncio.BaseTransport) -> None:
        self.t = t
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            req, self.buf = self.buf.split(b"\r\n\r\n", 1)
            if b"close" in req.lower():
                self.t.write(RESP_CLOSE)  # type: ignore[attr-defined]
                self.t.close()
                return
            self.t.write(RESP_KA)  # type: ignore[attr-defined]


async def main(port: int) -> None:
    srv = await asyncio.get_running_loop().create_server(H, "127.0.0.1", port, backlog=1024)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1])))
