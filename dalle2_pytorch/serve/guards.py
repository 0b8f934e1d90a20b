"""What stands between the network and the API: a Host allow-list, a request-body size limit, and one error body.

Every 4xx/5xx answer is ``{"error": "<what is wrong and what to do>", "field": <JSON path or null>}`` (a 422 also
keeps pydantic's list under ``"detail"``): unknown routes and methods, malformed JSON, bodies over the limit, hosts
not allowed, and our own failures alike.

* **Host allow-list** (DNS rebinding: a web page whose name resolves to 127.0.0.1 must not reach a local server): a
  request whose ``Host`` header names another host gets 400.  ``dalle2 serve`` allows the names it is bound to plus
  localhost (:func:`default_allowed_hosts`); ``DALLE2_ALLOWED_HOSTS`` (comma-separated) adds names, ``*`` allows all.
* **Body size limit**: a body longer than ``max_body_bytes`` gets 413 before it is parsed, whether it announces its
  length or is streamed in chunks.  Routes that carry images (the manipulation endpoints) get their own, larger
  limit (``path_limits``), sized for their uploads, whose own per-image limit then answers with the field's name.
"""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any, Awaitable, Callable, Iterable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

ALLOWED_HOSTS_ENV = "DALLE2_ALLOWED_HOSTS"
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
DEFAULT_MAX_BODY_BYTES = 64 * 1024  # a full request (8 prompts of 1 KiB and the settings) is well under 16 KiB

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


def error_body(error: str, field: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    """The one shape of every error answer."""
    return {"error": error, "field": field, **extra}


def error_response(status: int, error: str, field: Optional[str] = None, **extra: Any) -> JSONResponse:
    headers = extra.pop("headers", None)
    return JSONResponse(error_body(error, field, **extra), status_code=status, headers=headers)


async def _send_json(send: Callable, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def default_allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The names a server bound to ``host`` answers to: ``host`` itself and localhost; for a wildcard address also
    this machine's name and addresses.  ``extra`` (``dalle2 serve --allowed-host``) and ``DALLE2_ALLOWED_HOSTS`` add
    more (``*``: any)."""
    extra = [str(name).strip().lower() for name in extra]
    if not all(extra) or any(c in name for name in extra for c in " /,"):
        raise ValueError(f"allowed hosts {extra!r}: give bare host names or addresses (no scheme, port list, "
                         "comma or empty name), e.g. --allowed-host dalle.example.org, or '*' for any")
    names = [host, *LOCAL_NAMES]
    if host in WILDCARD_ADDRESSES:
        names.remove(host)
        hostname = socket.gethostname()
        names += [hostname, socket.getfqdn()]
        try:
            names += socket.gethostbyname_ex(hostname)[2]
        except OSError:  # pragma: no cover - a machine whose own name does not resolve
            pass
    extra += [name.strip() for name in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if name.strip()]
    return sorted(set(names + extra))


def _hostname(header: str) -> str:
    """``Host`` header -> host name (lower case, without the port; IPv6 brackets removed)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostAllowList:
    """ASGI middleware: 400 unless the request's ``Host`` is one of ``allowed`` (``*`` allows any)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {name.lower().strip("[]") for name in allowed}

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or "*" in self.allowed:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if _hostname(host) not in self.allowed:
            return await _send_json(send, 400, error_body(
                f"Host {host!r} is not served here (allowed: {', '.join(sorted(self.allowed))}); add it to "
                f"{ALLOWED_HOSTS_ENV} if this name is really yours", "headers.host"))
        return await self.app(scope, receive, send)


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (announced, or counted while it streams)."""

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: Optional[dict[str, int]] = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    def _refuse(self, send: Callable, size: str, limit: int) -> Awaitable[None]:
        return _send_json(send, 413, error_body(f"the request body is {size}; at most {limit} bytes are accepted",
                                                "body"))

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.path_limits.get(scope.get("path", ""), self.max_bytes)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._refuse(send, f"{int(length)} bytes", limit)
        received, too_large = 0, False

        async def counted_receive() -> dict:
            # past the limit the body is cut short (the rest is never read) and the app's answer is replaced
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: dict) -> None:
            if not too_large:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)
        if too_large:
            await self._refuse(send, f"over {limit} bytes", limit)


_TYPE_TAG = re.compile(r"\[|^(str|int|float|bool|none)$")  # pydantic's union members in a location: not fields


def _field_of(location: Iterable[Any]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path")
             and not (isinstance(p, str) and _TYPE_TAG.search(p))]
    return ".".join(parts) or "body"


def _message_of(error: dict) -> str:
    if error.get("type") == "json_invalid":
        offset = next((p for p in error.get("loc", ()) if isinstance(p, int)), None)
        reason = (error.get("ctx") or {}).get("error", "malformed")
        return f"the body is not valid JSON ({reason}{'' if offset is None else f' at character {offset}'})"
    return str(error["msg"]).removeprefix("Value error, ")


def unprocessable(errors: list[dict]) -> JSONResponse:
    """422 whose ``error`` names every bad field, ``field`` the first, and ``detail`` keeps pydantic's list.

    A field is a JSON path into the request (``prompt.1``); malformed JSON is about the whole ``body`` (pydantic
    reports the byte offset where parsing stopped as if it were a field)."""
    def field(error: dict) -> str:
        return "body" if error.get("type") == "json_invalid" else _field_of(error["loc"])

    summary = "; ".join(f"{field(e)}: {_message_of(e)}" for e in errors)
    detail = [{"loc": list(e["loc"]), "field": field(e), "msg": _message_of(e), "type": e.get("type", "")}
              for e in errors]
    return error_response(422, summary, detail[0]["field"] if detail else "body", detail=detail)


def install_error_bodies(app: FastAPI) -> None:
    """Answer every error -- validation, unknown route or method, our own failure -- with :func:`error_body`."""

    @app.exception_handler(RequestValidationError)
    async def on_bad_input(_: Request, error: RequestValidationError) -> JSONResponse:
        return unprocessable(list(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path}; the API is under /v1 (see /docs)"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail)
        return error_response(error.status_code, message, None, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def on_failure(_: Request, error: Exception) -> JSONResponse:
        return error_response(500, f"internal error ({type(error).__name__}); this is a bug in the server", None)


def guard(app: FastAPI, *, max_body_bytes: int, allowed_hosts: Optional[Iterable[str]],
          path_limits: Optional[dict[str, int]] = None) -> None:
    """Install the error bodies, the body size limit (``path_limits``: larger ones for given routes) and (when
    ``allowed_hosts`` is given) the Host allow-list."""
    install_error_bodies(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes, path_limits=path_limits)
    if allowed_hosts is not None:
        app.add_middleware(HostAllowList, allowed=list(allowed_hosts))
