"""specfaas Python runner: the Initializer of the Initializer/Handler model.

Started once per warm function as `python3 -u runner.py SOCKET CODE_FILE MAIN`. It loads the function's code once,
then forks Handler processes when the platform asks for them. Each handler opens its own connection to the
platform's Unix socket and waits there for activations; the platform sends an activation straight to an idle
handler, so forking (about 1.5 ms for a Python process on a small VM) stays off the path of an invocation. A
handler runs one activation at a time and is reused after a clean finish, as an OpenWhisk container is. Killing a
handler (SIGKILL from the platform) leaves this process, and the loaded code, warm; the platform asks for a new one.

Protocol, one JSON object per line:
  initializer -> platform : hello{role:init,pid}  ready | init_error{error}  exited{hid,code|signal}
  platform -> initializer : spawn{}  kill{hid}
  handler -> platform     : hello{role:handler,hid,pid}  log{stream,line}  call{rid,call,...}  result{value}
                            error{message}
  platform -> handler     : run{id,args,env}  reply{rid,ok,value|error}
"""

import ctypes
import gc
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import threading
import traceback


def send(sock, lock, msg):
    data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
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
        for fd, stream in self.STREAMS:
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self.pipes[r] = stream
            self.pending[r] = b""
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
            for r in self.pipes:
                self.drain(r, final=True)


def handler(socket_path, main_fn):
    """Runs in a forked handler process; never returns."""
    import specfaas

    try:  # die with the initializer (PR_SET_PDEATHSIG = 1)
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    lock = threading.Lock()
    send(sock, lock, {"op": "hello", "role": "handler", "hid": os.getpid(), "pid": os.getpid()})

    capture = Capture(sock, lock)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)

    reader = LineReader(sock)
    specfaas._attach(sock, lock, reader)
    for line in reader.lines():
        msg = json.loads(line)
        if msg.get("op") != "run":
            continue
        os.environ.update(msg.get("env") or {})
        try:
            result = main_fn(msg.get("args") or {})
            outcome = {"op": "result", "value": result}
            json.dumps(outcome)  # a result that is not JSON is the function's error
        except BaseException as e:  # noqa: BLE001 - every failure of user code is reported
            traceback.print_exc()
            outcome = {"op": "error", "message": "An error has occurred: %s: %s" % (type(e).__name__, e)}
        capture.barrier()
        send(sock, lock, outcome)
    os._exit(0)  # the platform closed the connection: this handler is retired


def main():
    socket_path, code_file, main_name = sys.argv[1], sys.argv[2], sys.argv[3]
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.connect(socket_path)
    lock = threading.Lock()
    send(control, lock, {"op": "hello", "role": "init", "pid": os.getpid()})
    try:
        import specfaas  # noqa: F401 - imported once here, so handlers inherit it

        sys.path.insert(0, os.path.dirname(os.path.abspath(code_file)))
        spec = importlib.util.spec_from_file_location("__action__", code_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        main_fn = getattr(module, main_name, None)
        if not callable(main_fn):
            raise AttributeError("the code defines no function named %r" % main_name)
    except BaseException as e:  # noqa: BLE001
        send(control, lock, {"op": "init_error", "error": "%s: %s" % (type(e).__name__, e)})
        return
    # Objects that exist now are never collected, so forks share their pages instead of copying them.
    gc.collect()
    gc.freeze()
    send(control, lock, {"op": "ready"})

    # SIGCHLD wakes the select loop through a self-pipe, so exits are reported promptly.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = set()
    reader = LineReader(control)
    while True:
        ready, _, _ = select.select([control, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            if os.WIFSIGNALED(status):
                send(control, lock, {"op": "exited", "hid": pid, "signal": os.WTERMSIG(status)})
            else:
                send(control, lock, {"op": "exited", "hid": pid, "code": os.WEXITSTATUS(status)})
        if control not in ready:
            continue
        chunk = control.recv(1 << 16)
        if not chunk:
            return  # the platform went away: so do we
        reader.buf += chunk
        while b"\n" in reader.buf:
            line, reader.buf = reader.buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg["op"] == "spawn":
                pid = os.fork()
                if pid == 0:
                    try:
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        control.close()
                        handler(socket_path, main_fn)
                    finally:
                        os._exit(70)
                children.add(pid)
            elif msg["op"] == "kill":
                if msg.get("hid") in children:
                    try:
                        os.kill(msg["hid"], signal.SIGKILL)
                    except ProcessLookupError:
                        pass


if __name__ == "__main__":
    main()
