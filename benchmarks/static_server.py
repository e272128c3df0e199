"""A static file server on loopback, standing in for the Document Server's cache.

The save benchmark downloads the same file with docdesk and with curl from
here. Bodies go out with ``sendfile(2)``, so the server costs next to no CPU
and both clients are limited by themselves, not by a Python copy loop on the
other end of the socket. Run it as a script; it prints its port on stdout
once it listens::

    python benchmarks/static_server.py --directory DIR [--port PORT]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["SendfileHandler", "main"]


class SendfileHandler(SimpleHTTPRequestHandler):
    """Serves files from a folder, bodies by sendfile, without an access log."""

    def copyfile(self, source: Any, outputfile: Any) -> None:
        # The headers are already on the wire (the handler's writer is
        # unbuffered), so the body can go straight to the socket. A client
        # that stops halfway, as an interrupted run does, is no news here.
        with contextlib.suppress(ConnectionError):
            self.connection.sendfile(source)

    def log_message(self, format: str, *args: Any) -> None:
        """One line per request would only slow the benchmark down."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    handler = functools.partial(SendfileHandler, directory=args.directory)
    with ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
        print(server.server_address[1], flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            sys.exit(0)


if __name__ == "__main__":
    main()
