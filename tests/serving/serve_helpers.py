"""``vilau-rt serve`` as a subprocess on a free loopback port, for the server tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(tmp, checkpoint: str, *args: str):
    """Start ``vilau-rt serve CHECKPOINT ARGS`` (it exits by itself after 240 s), wait for
    /health, yield its base URL, stop it."""
    import httpx

    port = _free_port()
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "vilau_rt.cli", "serve", checkpoint, "--port", str(port),
         *args, "--exit-after", "240"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, VILAU_RT_CACHE=str(tmp)),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("server did not start: " + (tmp / "server.log").read_text())
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
