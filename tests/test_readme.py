"""Every Python example in README.md runs, against local servers: the placeholder
hosts it names are rewritten to servers this test starts (never skipped), and an
example that raises or hangs fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from redis_server import RedisServer
from servers import Server, refusing_port, scaled
from tls import TlsServer, pki

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
BLOCKS = BLOCK.findall(README.read_text())

PLACEHOLDERS = (
    "echo-server.example.com:7",
    "redis.example.com:6379",
    "refusing.example.com:9",
    "tls-echo.example.com:443",
    "graphite.example.com:2003",
)


def test_the_readme_has_examples_and_they_name_only_known_placeholders() -> None:
    assert len(BLOCKS) >= 8
    for block in BLOCKS:
        for host in re.findall(r'"([\w.-]+\.example\.com:\d+)"', block):
            assert host in PLACEHOLDERS, f"unknown placeholder {host} in README example"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(
    block: str,
    make_server: Callable[..., Server],
    make_redis: Callable[..., RedisServer],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    code = block
    if "echo-server.example.com:7" in code:
        code = code.replace("echo-server.example.com:7", make_server("echo").address)
    if "redis.example.com:6379" in code:
        code = code.replace("redis.example.com:6379", make_redis(password="s3cret").address)
    if "graphite.example.com:2003" in code:
        code = code.replace("graphite.example.com:2003", make_server("sink").address)
    if "tls-echo.example.com:443" in code:
        tls_server = TlsServer(mode="echo")
        request.addfinalizer(tls_server.stop)
        pki().ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))  # the example's cafile
        code = code.replace("tls-echo.example.com:443", tls_server.address)
    with refusing_port() as refused:
        code = code.replace("refusing.example.com:9", refused)
        script = tmp_path / "example.py"
        script.write_text(code)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONWARNINGS": "error::ResourceWarning"}
        done = subprocess.run(
            [sys.executable, "-X", "dev", str(script)],
            capture_output=True,
            text=True,
            timeout=scaled(30),
            env=env,
            cwd=tmp_path,
        )
    assert done.returncode == 0, f"example failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
