"""ClickHouse's HTTP interface on loopback, answered by chDB, for the HTTP-path test.

No ClickHouse server can be started here: Debian bookworm packages
clickhouse-server 18.16 (2018), which has neither the Map type of the
exporter's table nor query parameters, and PyPI ships the engine only
in-process (chDB). So this serves the part of the HTTP interface that
clickhouse-connect uses: the query text in the body (or ``query=``),
``param_<name>`` arguments for query parameters, ``database``, basic auth, and
the result in the format the query asks for, with ClickHouse's headers and
its error convention (HTTP 500, ``X-ClickHouse-Exception-Code``). Every query
runs on the real engine; what is stood in for is only the HTTP framing, which
is what the test exercises in the client.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["ChdbHttp", "Request", "chdb_http"]

_FORMAT_RE = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)


@dataclass
class Request:
    """One request as the server saw it, for the test to inspect."""

    path: str
    args: dict[str, str]
    sql: str
    user: str | None


@dataclass
class ChdbHttp:
    url: str
    requests: list[Request] = field(default_factory=list)


def _user(header: str | None) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    return base64.b64decode(header[6:]).decode().split(":", 1)[0]


@contextmanager
def chdb_http(session: Any, user: str, password: str) -> Iterator[ChdbHttp]:
    """Serve ``session`` (a chdb session) on 127.0.0.1 for the block.

    Requests must authenticate as ``user``/``password`` (header or URL
    arguments), as a real server would require of a non-default user.
    """
    lock = threading.Lock()
    served = ChdbHttp("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self, body: bytes) -> None:
            parts = urlsplit(self.path)
            args = dict(parse_qsl(parts.query, keep_blank_values=True))
            sql = (args.get("query", "") + "\n" + body.decode()).strip()
            auth_user = _user(self.headers.get("Authorization"))
            auth_password = None
            if auth_user is not None:
                auth_password = base64.b64decode(self.headers["Authorization"][6:]).decode()
                auth_password = auth_password.split(":", 1)[1]
            else:
                auth_user, auth_password = args.get("user"), args.get("password")
            served.requests.append(Request(parts.path, args, sql, auth_user))
            if parts.path == "/ping":
                self._answer(200, b"Ok.\n", {"Content-Type": "text/plain"})
                return
            if (auth_user, auth_password) != (user, password):
                self._answer(
                    401,
                    b"Code: 516. DB::Exception: " + user.encode() + b": Authentication failed",
                    {"X-ClickHouse-Exception-Code": "516"},
                )
                return
            params = {k[6:]: v for k, v in args.items() if k.startswith("param_")}
            match = _FORMAT_RE.search(sql)
            fmt = match.group(1) if match else args.get("default_format", "TabSeparated")
            if match:
                sql = sql[: match.start()].rstrip()
            try:
                with lock:
                    if args.get("database"):
                        session.query(f"USE {args['database']}")
                    result = session.query(sql, fmt, params=params)
                    data = result.bytes() if result is not None else b""
            except Exception as exc:
                message = str(exc)
                code = re.match(r"Code: (\d+)", message)
                self._answer(
                    500,
                    message.encode(),
                    {"X-ClickHouse-Exception-Code": code.group(1) if code else "1"},
                )
                return
            summary = {"read_rows": "0", "read_bytes": "0", "written_rows": "0"}
            self._answer(
                200,
                data,
                {
                    "Content-Type": "application/octet-stream",
                    "X-ClickHouse-Format": fmt,
                    "X-ClickHouse-Timezone": "UTC",
                    "X-ClickHouse-Server-Display-Name": "chdb-over-http",
                    "X-ClickHouse-Query-Id": args.get("query_id") or str(uuid.uuid4()),
                    "X-ClickHouse-Summary": json.dumps(summary),
                },
            )

        def do_GET(self) -> None:
            self._handle(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._handle(self.rfile.read(length))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
