"""Helpers for wasmgate plugins written in Python (built with componentize-py).

One file, no third-party dependency. It gives a router with ``:param``
segments, JSON in and out, errors that become responses, and thin wrappers
over the capabilities the plugin's world imports (``kv``, ``keys``,
``config``, ``log``). The answers match the Rust SDK's (plugins/sdk): no
matching path is 404 ``{"error":"not found"}``, a matching path without the
method is 405 ``{"error":"method not allowed"}`` with ``allow``, an
``Error(status, message)`` is ``status`` with ``{"error": message}``, and any
other exception is 500 ``{"error":"internal error"}`` with the traceback in
the host log (the plugin's stderr).

Build against the world that ``wasmgate wit`` writes for the plugin's grants
(``wasmgate wit --config config.yaml --plugin NAME --out wit``), so the
component imports only what is granted::

    from wit_world import exports
    import wasmgate
    from wasmgate import Error, Response, Router, kv

    router = Router()

    @router.get("/count/:name")
    def get(req, params):
        return Response.json(200, {"name": params["name"], "count": kv.get_json(params["name"]) or 0})

    class Handler(exports.Handler):
        def handle(self, req):
            return router.serve(req)

A capability the world does not import is not an error until it is used:
then the request fails with a 500 and the log says which grant to add.

componentize-py snapshots the interpreter after importing the plugin, and
the host gives plugins no directory to import from at run time: import every
module you need at the top of a file, never inside a function.
"""

import importlib
import json
import sys
import time
import traceback
from urllib.parse import parse_qsl, unquote

__all__ = [
    "Error",
    "MissingCapability",
    "Request",
    "Response",
    "Router",
    "serve",
    "now_secs",
    "kv",
    "keys",
    "config",
    "log",
]

#: The message of every ``Error.internal``.
INTERNAL = "internal error"
#: The message of a size error from ``kv``: what the client sent was too large.
TOO_LARGE = "a value in the request is too large"


def _load(name):
    # At import time, which componentize-py runs while building: a module
    # that is not imported then cannot be imported later.
    try:
        return importlib.import_module("wit_world.imports." + name)
    except ImportError:
        return None


_BINDINGS = {
    name: _load(name)
    for name in ("kv", "keys", "crypto", "config", "log", "jobs", "ratelimit", "net", "wireguard", "outbound")
}

try:
    from componentize_py_types import Err as _Err
except ImportError:  # outside a component (unit tests)
    class _Err(Exception):
        pass

_types = _load("types")


class MissingCapability(Exception):
    """A capability the plugin's world does not import was used."""

    def __init__(self, name):
        super().__init__(
            f"the plugin used `{name}`, which its world does not import: add `{name}` under its "
            f"`grants:` in the config, regenerate the world with "
            f"`wasmgate wit --config CONFIG --plugin NAME --out DIR` and rebuild"
        )
        self.name = name


def _binding(name):
    b = _BINDINGS.get(name)
    if b is None:
        raise MissingCapability(name)
    return b


class Error(Exception):
    """An error answer: ``status`` with the body ``{"error": message}``."""

    def __init__(self, status, message):
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message

    @classmethod
    def bad_request(cls, message):
        return cls(400, message)

    @classmethod
    def unauthorized(cls, message):
        return cls(401, message)

    @classmethod
    def forbidden(cls, message):
        return cls(403, message)

    @classmethod
    def not_found(cls, message):
        return cls(404, message)

    @classmethod
    def method_not_allowed(cls):
        return cls(405, "method not allowed")

    @classmethod
    def conflict(cls, message):
        return cls(409, message)

    @classmethod
    def payload_too_large(cls, message):
        return cls(413, message)

    @classmethod
    def too_many_requests(cls, message):
        return cls(429, message)

    @classmethod
    def unavailable(cls, message):
        return cls(503, message)

    @classmethod
    def internal(cls, detail):
        """500 ``internal error``; ``detail`` goes to the host log, never to the client."""
        print(f"internal error: {detail}", file=sys.stderr)
        return cls(500, INTERNAL)

    def response(self):
        return Response.json(self.status, {"error": self.message})


def _json_bytes(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Response:
    """The answer to a request. The host adds ``content-length`` and ``x-request-id``."""

    def __init__(self, status, headers=None, body=b""):
        self.status = status
        self.headers = list(headers or [])
        self.body = body.encode() if isinstance(body, str) else bytes(body)

    @classmethod
    def json(cls, status, value):
        return cls(status, [("content-type", "application/json")], _json_bytes(value))

    @classmethod
    def text(cls, status, text):
        return cls(status, [("content-type", "text/plain; charset=utf-8")], text)

    @classmethod
    def empty(cls, status):
        return cls(status)

    def with_header(self, name, value):
        self.headers.append((name, value))
        return self

    def to_wit(self):
        return _types.Response(self.status, self.headers, self.body)


class Request:
    """One HTTP request, fully read by the host."""

    def __init__(self, raw):
        self.raw = raw
        self.method = raw.method
        self.full_path = raw.path
        self.prefix = raw.prefix
        self.query_string = raw.query
        self.headers = list(raw.headers)
        self.body = bytes(raw.body)
        self.client_addr = raw.client_addr
        self.request_id = raw.request_id
        base = raw.prefix.rstrip("/")
        rest = raw.path[len(base):] if raw.path.startswith(base) else None
        if rest is not None and (rest == "" or rest.startswith("/")):
            #: The path below the mount prefix, always starting with '/'.
            self.path = rest or "/"
        else:
            self.path = raw.path or "/"

    def header(self, name):
        """The first value of the header ``name``, whatever its case."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def query(self, name):
        """The first value of the query parameter ``name``, decoded."""
        for k, v in parse_qsl(self.query_string, keep_blank_values=True):
            if k == name:
                return v
        return None

    def text(self):
        """The body as text, or a 400."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise Error.bad_request("request body is not valid UTF-8") from None

    def json(self):
        """The body parsed as JSON, or a 400 that says what is wrong."""
        text = self.text()
        try:
            return json.loads(text)
        except ValueError as e:
            raise Error.bad_request(f"invalid JSON body: {e}") from None


def _match(pattern, path):
    params = {}
    want = pattern.split("/")
    got = path.split("/")
    if len(want) != len(got):
        return None
    for w, g in zip(want, got):
        if w.startswith(":"):
            if g == "":
                return None
            params[w[1:]] = unquote(g, errors="replace")
        elif w != g:
            return None
    return params


class Router:
    """Method-and-path routing over ``Request.path`` (the path below the mount).

    A segment ``:name`` matches any one non-empty segment and binds it,
    percent-decoded, in the handler's ``params``. Routes are tried in the
    order they were added. A handler is ``fn(req, params) -> Response`` and
    may raise ``Error``.
    """

    def __init__(self):
        self.routes = []

    def route(self, method, pattern, handler=None):
        if handler is None:
            return lambda f: self.route(method, pattern, f)
        self.routes.append((method, pattern, handler))
        return handler

    def get(self, pattern, handler=None):
        return self.route("GET", pattern, handler)

    def post(self, pattern, handler=None):
        return self.route("POST", pattern, handler)

    def put(self, pattern, handler=None):
        return self.route("PUT", pattern, handler)

    def patch(self, pattern, handler=None):
        return self.route("PATCH", pattern, handler)

    def delete(self, pattern, handler=None):
        return self.route("DELETE", pattern, handler)

    def handle(self, req):
        """Runs the first route matching ``req`` (a ``Request``); may raise ``Error``."""
        allowed = []
        for method, pattern, handler in self.routes:
            params = _match(pattern, req.path)
            if params is None:
                continue
            if method == req.method:
                return handler(req, params)
            if method not in allowed:
                allowed.append(method)
        if not allowed:
            raise Error.not_found("not found")
        return Error.method_not_allowed().response().with_header("allow", ", ".join(allowed))

    def serve(self, raw):
        """The WIT response for the WIT request ``raw``: what ``handle`` of an export returns."""
        return serve(self.handle, raw)


def serve(handler, raw):
    """Calls ``handler(Request)``, turning an ``Error`` into its JSON answer
    and any other exception into a 500 with the traceback in the log."""
    try:
        response = handler(Request(raw))
    except Error as e:
        response = e.response()
    except Exception:
        traceback.print_exc(file=sys.stderr)
        response = Error(500, INTERNAL).response()
    return response.to_wit()


def now_secs():
    """Unix seconds, from the host's wall clock."""
    return int(time.time())


def _case(err):
    return type(err).__name__.split("_", 1)[-1]


class _Kv:
    """The plugin's key-value store (grant ``kv``); values are bytes, or JSON
    through the ``_json`` variants. Keys sort as bytes, so zero-padded numbers
    list in numeric order."""

    #: How often ``transaction`` runs its function before giving up on conflicts.
    MAX_ATTEMPTS = 16
    _PAGE = 1000

    @staticmethod
    def _error(e):
        """The ``Error`` for a raw kv error (as the Rust SDK maps it)."""
        case, value = _case(e), getattr(e, "value", None)
        if case in ("KeyTooLarge", "ValueTooLarge"):
            print(f"kv: {case} (limit {value} bytes)", file=sys.stderr)
            return Error.payload_too_large(TOO_LARGE)
        if case == "EmptyKey":
            return Error.bad_request("empty key")
        if case == "Conflict":
            return Error.conflict("conflicting concurrent update, retry")
        if case == "Closed":
            return Error.internal("kv transaction already committed")
        return Error.internal(f"kv storage: {value}")

    def _call(self, f, *args):
        try:
            return f(*args)
        except _Err as e:
            raise self._error(e.value) from None

    def get(self, key):
        """The bytes at ``key``, or None."""
        return self._call(_binding("kv").get, key)

    def set(self, key, value):
        """Stores ``value`` (bytes, or str as UTF-8)."""
        self._call(_binding("kv").set, key, _bytes(value))

    def delete(self, key):
        """Returns whether the key existed."""
        return self._call(_binding("kv").delete, key)

    def count(self, prefix):
        return self._call(_binding("kv").count, prefix)

    def list(self, prefix):
        """Every ``(key, bytes)`` whose key starts with ``prefix``, in key order."""
        out, cursor = [], None
        while True:
            page = self._call(_binding("kv").list, prefix, cursor, self._PAGE)
            out.extend(page.entries)
            if page.next is None:
                return out
            cursor = page.next

    def get_json(self, key):
        value = self.get(key)
        return None if value is None else _decode(key, value)

    def set_json(self, key, value):
        self.set(key, _json_bytes(value))

    def list_json(self, prefix):
        return [(k, _decode(k, v)) for k, v in self.list(prefix)]

    def transaction(self, fn):
        """Runs ``fn(txn)`` in a fresh transaction and commits it, running it
        again in a new one when the commit finds a conflict; an exception from
        ``fn`` discards the transaction. After ``MAX_ATTEMPTS`` conflicts in a
        row the answer is a 503. ``fn`` may run several times."""
        raw = _binding("kv")
        for _ in range(self.MAX_ATTEMPTS):
            with raw.Txn() as handle:
                txn = Txn(handle)
                result = fn(txn)
                try:
                    handle.commit()
                    return result
                except _Err as e:
                    if _case(e.value) != "Conflict":
                        raise self._error(e.value) from None
        raise Error.unavailable("too many concurrent updates, retry")


class Txn:
    """An all-or-nothing set of writes; reads see its own writes. Use it
    through ``kv.transaction``."""

    def __init__(self, handle):
        self._handle = handle

    def get(self, key):
        return kv._call(self._handle.get, key)

    def set(self, key, value):
        kv._call(self._handle.set, key, _bytes(value))

    def delete(self, key):
        kv._call(self._handle.delete, key)

    def get_json(self, key):
        value = self.get(key)
        return None if value is None else _decode(key, value)

    def set_json(self, key, value):
        self.set(key, _json_bytes(value))


def _bytes(value):
    return value.encode() if isinstance(value, str) else bytes(value)


def _decode(key, value):
    try:
        return json.loads(value)
    except ValueError as e:
        raise Error.internal(f"stored value at {key!r} is not JSON: {e}") from None


class _Keys:
    """API keys for the plugin's callers (grant ``keys``); the host keeps digests only."""

    @staticmethod
    def _call(f, *args):
        try:
            return f(*args)
        except _Err as e:
            case, value = _case(e.value), getattr(e.value, "value", None)
            if case == "Invalid":
                raise Error.bad_request(value) from None
            raise Error.internal(f"keys storage: {value}") from None

    @staticmethod
    def _info(info):
        return {
            "id": info.id,
            "role": info.role,
            "label": info.label,
            "created_at": info.created_at,
            "expires_at": info.expires_at,
        }

    def issue(self, role, label, expires_at=None):
        """``(info, secret)``; the secret is shown only here."""
        issued = self._call(_binding("keys").issue, role, label, expires_at)
        return self._info(issued.info), issued.secret

    def verify(self, secret):
        """The key's info when the secret is known and not expired, else None."""
        info = self._call(_binding("keys").verify, secret)
        return None if info is None else self._info(info)

    def revoke(self, key_id):
        """Returns whether the key existed."""
        return self._call(_binding("keys").revoke, key_id)

    def list(self):
        return [self._info(i) for i in self._call(_binding("keys").list)]

    def authenticate(self, req):
        """The key behind ``authorization: Bearer <secret>``, or a 401 ``invalid key``."""
        value = req.header("authorization") or ""
        for scheme in ("Bearer ", "bearer "):
            if value.startswith(scheme):
                secret = value[len(scheme):].strip()
                info = self.verify(secret) if secret else None
                if info is not None:
                    return info
        raise Error.unauthorized("invalid key")


class _Config:
    """The plugin's ``settings:`` (grant ``config``)."""

    def get(self, key, default=None):
        """A top-level setting: scalars as their text, lists and maps as JSON."""
        value = _binding("config").get(key)
        return default if value is None else value

    def get_int(self, key, default):
        """A setting as an integer; an unparseable value is a 500."""
        value = _binding("config").get(key)
        if value is None:
            return default
        try:
            return int(value.strip())
        except ValueError:
            raise Error.internal(f"setting {key!r} has an invalid value") from None

    def all(self):
        """Every setting as one dict."""
        return json.loads(_binding("config").all())


class _Log:
    """Lines in the host log, tagged with the plugin and the request id (grant
    ``log``). Without the grant, ``print`` to stderr also reaches the log."""

    def _write(self, level, message):
        raw = _binding("log")
        raw.log(getattr(raw.Level, level), str(message))

    def trace(self, message):
        self._write("TRACE", message)

    def debug(self, message):
        self._write("DEBUG", message)

    def info(self, message):
        self._write("INFO", message)

    def warn(self, message):
        self._write("WARN", message)

    def error(self, message):
        self._write("ERROR", message)


kv = _Kv()
keys = _Keys()
config = _Config()
log = _Log()


def binding(name):
    """The raw componentize-py module of a capability the world imports
    (``crypto``, ``jobs``, ``ratelimit``, ``net``, ``wireguard``, ``outbound``),
    or ``MissingCapability``."""
    return _binding(name)
