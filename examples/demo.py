"""perconn demo: talk to an echo server that goes away and comes back.

With no arguments it starts its own echo server on 127.0.0.1 (no remote host
needed), sends a few lines, kills and restarts the server in the middle, and
shows perconn noticing the drop, logging it, and reconnecting, so the
next line goes out on the new connection. (A call that was using the dropped
connection would get a perconn.ConnectionIOError instead.)

    python examples/demo.py            # the synchronous perconn.Conn
    python examples/demo.py --aio      # the asyncio perconn.aio.Conn
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import threading
import time

import perconn
import perconn.aio


class EchoServer:
    """A tiny threaded echo server that can be stopped and restarted on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.start()

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.port = self._listener.getsockname()[1]
        self._clients: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            self._clients.append(client)
            threading.Thread(target=self._echo, args=(client,), daemon=True).start()

    @staticmethod
    def _echo(client: socket.socket) -> None:
        try:
            while data := client.recv(4096):
                client.sendall(data)
        except OSError:
            pass

    def stop(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for client in self._clients:
            client.shutdown(socket.SHUT_RDWR)  # FIN now, and wake its echo thread
            client.close()


def run_sync(address: str, server: EchoServer | None) -> None:
    with perconn.connect(address, retry_min=0.1, retry_max=2.0) as conn:
        for i in range(4):
            line = f"line {i}\n".encode()
            try:
                conn.write(line, timeout=5)
                print("echoed:", conn.readexactly(len(line), timeout=5))
            except perconn.ConnectionIOError as exc:
                print(f"I/O error, perconn is reconnecting: {exc!r}")
            if i == 1 and server is not None:
                print("-- stopping and restarting the server --")
                server.stop()
                server.start()
            time.sleep(0.05)  # a real client has pauses: perconn checks an idle connection before writing
        print(f"done after {conn.generation} connections")


async def run_aio(address: str, server: EchoServer | None) -> None:
    async with perconn.aio.connect(address, retry_min=0.1, retry_max=2.0) as conn:
        for i in range(4):
            line = f"line {i}\n".encode()
            try:
                await conn.write(line, timeout=5)
                print("echoed:", await conn.readuntil(b"\n", timeout=5))
            except perconn.ConnectionIOError as exc:
                print(f"I/O error, perconn is reconnecting: {exc!r}")
            if i == 1 and server is not None:
                print("-- stopping and restarting the server --")
                server.stop()
                server.start()
            await asyncio.sleep(0.05)  # meanwhile the transport reports the drop and perconn redials
        print(f"done after {conn.generation} connections")


def main() -> None:
    parser = argparse.ArgumentParser(description="perconn demo")
    parser.add_argument("--address", help="an echo server to use instead of the embedded one")
    parser.add_argument("--aio", action="store_true", help="use perconn.aio instead of perconn")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    server = None if args.address else EchoServer()
    address = args.address or f"127.0.0.1:{server.port}"  # type: ignore[union-attr]
    if args.aio:
        asyncio.run(run_aio(address, server))
    else:
        run_sync(address, server)


if __name__ == "__main__":
    main()
