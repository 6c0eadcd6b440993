"""Run a Python script in throwaway network and mount namespaces, where a test
controls name resolution: loopback only, /etc/resolv.conf pointing at a DNS
"server" the script itself may run on 127.0.0.1:53, and a private /etc/hosts
the script may rewrite. No packet leaves the namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from servers import scaled

HOSTS_HELPERS = """
import socket

def serve_on(ip, port=0):
    \"\"\"A listener on ip:port (port 0: any), and its port.\"\"\"
    listener = socket.create_server((ip, port))
    listener.settimeout(10)
    return listener, listener.getsockname()[1]

def point(name, ip):
    \"\"\"Make *name* resolve to *ip*, in this namespace's private /etc/hosts.\"\"\"
    with open("/etc/hosts", "w") as hosts:
        hosts.write(f"127.0.0.1 localhost\\n{ip} {name}\\n")
"""
"""Helpers for scripts that move a name from one loopback address to another."""

RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"


def run_isolated(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run *script* with this interpreter inside new namespaces; skip if they cannot be made."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to make a network namespace")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(RESOLV_CONF)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    source = tmp_path / "script.py"
    source.write_text(script)
    setup = f"ip link set lo up && mount --bind {resolv} /etc/resolv.conf && mount --bind {hosts} /etc/hosts"
    probe = subprocess.run(["unshare", "-m", "-n", "sh", "-c", setup], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make namespaces here: {probe.stderr.strip()}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        ["unshare", "-m", "-n", "sh", "-c", f"{setup} && exec {sys.executable} {source}"],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env=env,
    )
