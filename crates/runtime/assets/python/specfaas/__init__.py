"""The specfaas function SDK for Python.

    import specfaas
    specfaas.kv.put("user:alice", {"visits": 1})
    specfaas.kv.get("user:alice")        # -> {"visits": 1}, or None if absent
    specfaas.kv.delete("user:alice")
    specfaas.invoke("other-function", {"x": 1})   # blocks; returns the callee's result
    specfaas.http("https://example.com/hook", method="POST", body='{"done": true}')
        # -> {"status": 200, "headers": {...}, "body": "..."}; an external effect, performed only once this
        #    function is non-speculative

Every call goes to the platform over the activation's connection; the platform, not the function, talks to
storage. Keys are strings and values are JSON. A key that is not a str raises TypeError, and one that is not valid
Unicode (a lone surrogate) raises ValueError, at the call.
"""

import json

__all__ = ["kv", "invoke", "http", "Error", "InvokeError"]


class Error(Exception):
    """A platform call failed (bad key, limit exceeded, ...)."""


class InvokeError(Error):
    """The invoked function failed; `.error` holds its error."""

    def __init__(self, error):
        super().__init__(error if isinstance(error, str) else json.dumps(error))
        self.error = error


_conn = None


def _attach(sock, lock, reader):
    global _conn
    _conn = _Connection(sock, lock, reader)


class _Connection:
    def __init__(self, sock, lock, reader):
        self.sock, self.lock, self.lines, self.next_rid = sock, lock, reader.lines(), 0

    def call(self, call, **fields):
        self.next_rid += 1
        rid = self.next_rid
        msg = dict(fields, op="call", rid=rid, call=call)
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        with self.lock:
            self.sock.sendall(data)
        for line in self.lines:
            reply = json.loads(line)
            if reply.get("op") == "reply" and reply.get("rid") == rid:
                if reply.get("ok"):
                    return reply.get("value")
                if call == "invoke" and "error" in reply and reply.get("kind") == "function":
                    raise InvokeError(reply["error"])
                raise Error(reply.get("error", "platform call failed"))
        raise Error("the platform closed the connection")


def _call(call, **fields):
    if _conn is None:
        raise Error("specfaas SDK calls are only allowed while handling an activation")
    return _conn.call(call, **fields)


def _key(key):
    """A key as the platform takes it: a str of valid Unicode. Anything else raises here, at the call, where the
    function can catch it; sent as is, it would break the connection's protocol and end the activation."""
    if not isinstance(key, str):
        raise TypeError("specfaas.kv key must be a str, not %s" % type(key).__name__)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("specfaas.kv key is not valid Unicode (%s at index %d)" % (e.reason, e.start)) from None
    return key


class _Kv:
    def get(self, key):
        return _call("kv.get", key=_key(key))

    def put(self, key, value):
        _call("kv.put", key=_key(key), value=value)

    def delete(self, key):
        _call("kv.delete", key=_key(key))


kv = _Kv()


def invoke(name, args=None):
    return _call("invoke", function=name, args=args if args is not None else {})


def http(url, method="GET", headers=None, body=None):
    """Outbound HTTP. It is an external effect: a speculative function waits here until it is non-speculative,
    and a squashed one never sends it."""
    request = {"method": method, "url": url, "headers": headers or {}, "body": body}
    return _call("http", request=request)
