"""specfaas Python runner: one handler process.

Started by the platform as `python3 -u -S runner.py CODE_FILE MAIN`, with its channel to the platform on fd 3 (one end
of a socket pair the platform made: no one else can reach it). It loads the function's code, reports `ready`
(or `init_error`), then runs one activation at a time, and is reused after a clean finish, as an OpenWhisk
container is. The platform keeps a spare handler started, so loading stays off the invocation's path; killing a
handler is SIGKILL from the platform (the whole sandbox goes with it).

Protocol, one JSON object per line:
  handler -> platform : ready{pid} | init_error{error}  log{stream,line}  call{rid,call,...}  result{value}
                        error{message}
  platform -> handler : run{id,args,env}  reply{rid,ok,value|error}
"""

import importlib.util
import json
import os
import select
import socket
import sys
import threading
import traceback


def encode(msg):
    return (json.dumps(msg, separators=(",", ":")) + "\n").encode()


def send(sock, lock, msg):
    data = encode(msg)
    with lock:
        sock.sendall(data)


class LineReader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def lines(self):
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                yield line
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return
            self.buf += chunk

class Capture:
    """Captures fd 1 and 2 through pipes, so output of C extensions and subprocesses is logged too.

    One pump thread forwards output line by line while the activation runs (a full pipe would block the function).
    At the end of an activation the handler drains both pipes itself, under the same lock, so every byte written
    before the result is logged with this activation, with no thread round trip when there is nothing to read."""

    STREAMS = ((1, "stdout"), (2, "stderr"))

    def __init__(self, sock, lock):
        self.sock, self.send_lock = sock, lock
        self.lock = threading.Lock()
        self.pipes = {}
        self.pending = {}
        self.poll = select.poll()
        for fd, stream in self.STREAMS:
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self.pipes[r] = stream
            self.pending[r] = b""
            self.poll.register(r, select.POLLIN)
        threading.Thread(target=self.pump, daemon=True).start()

    def pump(self):
        while True:
            readable, _, _ = select.select(list(self.pipes), [], [])
            with self.lock:
                for r in readable:
                    self.drain(r, final=False)

    def drain(self, r, final):
        while True:
            try:
                chunk = os.read(r, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.pending[r] += chunk
            *lines, self.pending[r] = self.pending[r].split(b"\n")
            for line in lines:
                self.forward(r, line)
        if final and self.pending[r]:
            self.forward(r, self.pending[r])
            self.pending[r] = b""

    def forward(self, r, line):
        msg = {"op": "log", "stream": self.pipes[r], "line": line.decode("utf-8", "replace")}
        send(self.sock, self.send_lock, msg)

    def barrier(self):
        """Forwards everything written so far, including a last line without a newline."""
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        with self.lock:
            # One poll, not a failing read per pipe: an activation that wrote nothing costs one system call here.
            ready = {fd for fd, _ in self.poll.poll(0)}
            for r in self.pipes:
                if r in ready or self.pending[r]:
                    self.drain(r, final=True)


def site_packages():
    """Puts the interpreter's site-packages on the path, as `site` would, but runs none of their `.pth` files: the
    runner starts with `-S`, so that the host's start-up hooks never run in a function's process."""
    import site

    for path in site.getsitepackages():
        if os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)


def main():
    code_file, main_name = sys.argv[1], sys.argv[2]
    site_packages()
    sock = socket.socket(fileno=3)
    lock = threading.Lock()
    try:
        import specfaas

        sys.path.insert(0, os.path.dirname(os.path.abspath(code_file)))
        spec = importlib.util.spec_from_file_location("__action__", code_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        main_fn = getattr(module, main_name, None)
        if not callable(main_fn):
            raise AttributeError("the code defines no function named %r" % main_name)
    except BaseException as e:  # noqa: BLE001
        send(sock, lock, {"op": "init_error", "error": "%s: %s" % (type(e).__name__, e)})
        return
    # Every thread exists before `ready`: a handler started in the background gets its priority back per thread.
    capture = Capture(sock, lock)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    send(sock, lock, {"op": "ready", "pid": os.getpid()})

    reader = LineReader(sock)
    specfaas._attach(sock, lock, reader)
    environ = os.environ
    for line in reader.lines():
        msg = json.loads(line)
        if msg.get("op") != "run":
            continue
        for name, value in (msg.get("env") or {}).items():
            if environ.get(name) != value:
                environ[name] = value
        try:
            result = main_fn(msg.get("args") or {})
            data = encode({"op": "result", "value": result})  # a result that is not JSON is the function's error
        except BaseException as e:  # noqa: BLE001 - every failure of user code is reported
            traceback.print_exc()
            name = type(e).__name__
            # The name and message go up as Lambda reports them, for a workflow's Retry and Catch.
            data = encode({"op": "error", "message": "An error has occurred: %s: %s" % (name, e), "name": name, "cause": str(e)})
        capture.barrier()
        with lock:
            sock.sendall(data)
    os._exit(0)  # the platform closed the channel: this handler is retired


if __name__ == "__main__":
    main()
