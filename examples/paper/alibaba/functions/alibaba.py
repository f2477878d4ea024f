"""Alibaba-like functions: one generic node of a generated call graph (see ../specfaas.toml and ../../generate.py).

A node spends its declared execution time (`work_ms`, `cpu_share` of it as CPU work), reads a record when `reads`
is set, then calls its callees in order, each with a key derived from its own, and returns a digest of what they
returned. The code of the Alibaba applications is not published; their call graphs and times are.
"""

import time

import specfaas


def work(args):
    """Spends the declared execution time: CPU first (in CPU time), then a wait on a remote service."""
    ms = float(args.get("work_ms", 22))
    cpu_ms = ms * float(args.get("cpu_share", 0.1))
    end = time.thread_time() + cpu_ms / 1000
    x = 0
    while time.thread_time() < end:
        x += 1
    time.sleep(max(ms - cpu_ms, 0) / 1000)


def mix(*values):
    h = 2166136261
    for v in values:
        for ch in str(v):
            h = ((h ^ ord(ch)) * 16777619) % (1 << 32)
    return h


def node(args):
    work(args)
    key = int(args["key"])
    digest = mix(key, args.get("work_ms"))
    if args.get("reads"):
        digest = mix(digest, specfaas.kv.get("record:%d" % (key % 100))["v"])
    for callee in args.get("callees", []):
        if callee.get("rare") and mix(key, callee["name"]) % 10 != 0:
            continue
        arg = {"same": key, "derived": (key * 7 + 3) % 1000, "const": 0}[callee["arg"]]
        digest = mix(digest, specfaas.invoke(callee["name"], {"key": arg})["digest"])
    return {"key": key, "digest": digest}
