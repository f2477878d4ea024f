"""specfaas Python runner: the Initializer of the Initializer/Handler model.

Started once per warm function as `python3 -u runner.py SOCKET CODE_FILE MAIN`. It loads the function's code once,
then forks one Handler process per activation. Each handler opens its own connection to the platform's Unix
socket and speaks line-delimited JSON on it, so the platform can answer its storage reads while it runs. Killing a
handler (SIGKILL from the platform) leaves this process, and the loaded code, warm.

Protocol, one JSON object per line:
  initializer -> platform : hello{role:init,pid} ready | init_error{error}  forked{id,pid}  exited{id,code|signal}
  platform -> initializer : run{id,args,env}  kill{id}
  handler -> platform     : hello{role:handler,id}  log{stream,line}  call{rid,call,...}  result{value}  error{message}
  platform -> handler     : reply{rid,ok,value|error}
"""

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


def pump_logs(fd, stream, sock, lock):
    """Forwards one captured stream (stdout or stderr) line by line."""
    with os.fdopen(fd, "rb", buffering=0) as f:
        pending = b""
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                send(sock, lock, {"op": "log", "stream": stream, "line": line.decode("utf-8", "replace")})
        if pending:
            send(sock, lock, {"op": "log", "stream": stream, "line": pending.decode("utf-8", "replace")})


def handle(socket_path, main_fn, msg):
    """Runs in the forked handler process; never returns."""
    import specfaas

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    lock = threading.Lock()
    send(sock, lock, {"op": "hello", "role": "handler", "id": msg["id"]})

    # Capture fd 1 and 2, so output of C extensions and subprocesses is logged too.
    pumps = []
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)
        t = threading.Thread(target=pump_logs, args=(r, stream, sock, lock), daemon=True)
        t.start()
        pumps.append(t)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)

    os.environ.update(msg.get("env") or {})
    specfaas._attach(sock, lock, LineReader(sock))
    outcome = None
    try:
        result = main_fn(msg.get("args") or {})
        outcome = {"op": "result", "value": result}
        json.dumps(outcome)  # a result that is not JSON is the function's error
    except BaseException as e:  # noqa: BLE001 - every failure of user code is reported
        traceback.print_exc()
        outcome = {"op": "error", "message": "An error has occurred: %s: %s" % (type(e).__name__, e)}
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        for t in pumps:
            t.join(timeout=5)
    try:
        send(sock, lock, outcome)
    except (TypeError, ValueError) as e:
        send(sock, lock, {"op": "error", "message": "The action returned a value that is not JSON: %s" % e})
    os._exit(0)


def main():
    socket_path, code_file, main_name = sys.argv[1], sys.argv[2], sys.argv[3]
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.connect(socket_path)
    lock = threading.Lock()
    send(control, lock, {"op": "hello", "role": "init", "pid": os.getpid()})
    try:
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
    send(control, lock, {"op": "ready"})

    # SIGCHLD wakes the select loop through a self-pipe, so exits are reported promptly.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = {}  # pid -> activation id
    by_id = {}  # activation id -> pid
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
            aid = children.pop(pid, None)
            by_id.pop(aid, None)
            if aid is None:
                continue
            if os.WIFSIGNALED(status):
                send(control, lock, {"op": "exited", "id": aid, "signal": os.WTERMSIG(status)})
            else:
                send(control, lock, {"op": "exited", "id": aid, "code": os.WEXITSTATUS(status)})
        if control not in ready:
            continue
        chunk = control.recv(1 << 20)
        if not chunk:
            return  # the platform went away: so do we
        reader.buf += chunk
        while b"\n" in reader.buf:
            line, reader.buf = reader.buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg["op"] == "run":
                pid = os.fork()
                if pid == 0:
                    try:
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        control.close()
                        handle(socket_path, main_fn, msg)
                    finally:
                        os._exit(70)
                children[pid] = msg["id"]
                by_id[msg["id"]] = pid
                send(control, lock, {"op": "forked", "id": msg["id"], "pid": pid})
            elif msg["op"] == "kill":
                pid = by_id.get(msg["id"])
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


if __name__ == "__main__":
    main()
