"""Shared by the service tests: a tiny exported model, the service in a child process, HTTP calls.

The service listens on 127.0.0.1 only, on a port the OS reports free; the
child is stopped (and its log shown on failure) when the block ends.
"""

import contextlib
import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Dict, Iterator, Optional, Tuple

import paddle

from paddleseg_ext.cvlibs import Config, SegBuilder
from tiny_config import write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVE = os.path.join(ROOT, "deploy", "python", "serve.py")


def _export_tool():
    spec = importlib.util.spec_from_file_location("tools_export_for_serve", os.path.join(ROOT, "tools", "export.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def export_tiny(tmp, name: str, bands: int = 3, onnx: bool = False, output_op: str = "argmax") -> str:
    """A tiny PSPNet (random weights, 3 classes, ``bands`` input bands) exported; its deploy.yaml."""
    folder = tmp / name
    folder.mkdir()
    cfg_path, _ = write_tiny_config(folder, size=(40, 24))
    if bands != 3:
        text = open(cfg_path).read().replace("num_classes: 3\n", f"num_classes: 3\n  img_channels: {bands}\n")
        text = text.replace("- type: Normalize\n", f"- type: Normalize\n      mean: {[0.5] * bands}\n"
                                                   f"      std: {[0.5] * bands}\n")
        open(cfg_path, "w").write(text)
    paddle.seed(0)
    weights = str(folder / "weights.pdparams")
    paddle.save(SegBuilder(Config(cfg_path)).model.state_dict(), weights)
    argv = ["--config", cfg_path, "--model_path", weights, "--save_dir", str(folder / "export"),
            "--output_op", output_op] + (["--format", "onnx"] if onnx else [])
    _export_tool().main(argv)
    return str(folder / "export" / "deploy.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running service: ``url``, ``call(...)`` and its log."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: str) -> None:
        self.proc, self.port, self.log_path = proc, port, log_path
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def call(self, method: str, path: str, body: Optional[bytes] = None,
             headers: Optional[Dict[str, str]] = None, timeout: float = 60) -> Tuple[int, Dict[str, str], bytes]:
        """``(status, headers with lower-case names, body)`` of one request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, **kw) -> Tuple[int, dict]:
        status, _, body = self.call(method, path, **kw)
        return status, json.loads(body)


def multipart(field: str, filename: str, data: bytes, content_type: str = "application/octet-stream"
              ) -> Tuple[bytes, Dict[str, str]]:
    """A ``multipart/form-data`` body with one file field, and its headers."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@contextlib.contextmanager
def serving(config: str, tmp, *args: str, startup_s: float = 300) -> Iterator[Server]:
    """Start ``serve.py --config config`` on a free loopback port; wait for /health (start-up includes
    --runtime auto's probe of every installed runtime); stop it after."""
    port = free_port()
    log_path = str(tmp / f"serve_{port}.log")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, SERVE, "--config", config, "--host", "127.0.0.1", "--port",
                                 str(port), *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    server = Server(proc, port, log_path)
    try:
        deadline = time.time() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve.py exited with status {proc.returncode}:\n{server.log()}")
            try:
                if server.call("GET", "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"serve.py did not answer /health within {startup_s} s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
