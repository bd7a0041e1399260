"""The emulator and the worker of ``orderpipe local`` listen on loopback only.

Read from the kernel, not from our own code: every listening TCP socket the emulator and worker
processes own (``/proc/<pid>/fd`` → ``/proc/<pid>/net/tcp{,6}``) must be bound to 127.0.0.1 or
::1. Linux only; elsewhere the test is skipped.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from pathlib import Path

import pytest

from core.local.embedded import EmbeddedConfig, EmbeddedStack

pytestmark = pytest.mark.integration

LISTEN = "0A"  # TCP state in /proc/net/tcp


def _address(hex_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        return ipaddress.IPv4Address(struct.pack("<I", struct.unpack(">I", raw)[0]))
    words = struct.unpack(">4I", raw)  # the kernel prints four host-order 32-bit words
    return ipaddress.IPv6Address(b"".join(struct.pack("<I", w) for w in words))


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in inodes:
                hex_ip, hex_port = local.split(":")
                found.append((str(_address(hex_ip)), int(hex_port, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@pytest.fixture(scope="module")
def proc() -> None:
    if not Path("/proc/self/net/tcp").exists():
        pytest.skip("needs Linux /proc to read listening sockets")


def test_the_socket_reader_sees_our_own_listener(proc: None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        mine = listening(os.getpid())
    assert ("127.0.0.1", port) in mine


@pytest.mark.parametrize(
    ("hex_ip", "address", "loopback"),
    [
        ("0100007F", "127.0.0.1", True),
        ("00000000", "0.0.0.0", False),  # every interface: what must never be found
        ("0A00A8C0", "192.168.0.10", False),
        ("00000000000000000000000001000000", "::1", True),
        ("00000000000000000000000000000000", "::", False),
        ("0000000000000000FFFF00000100007F", "::ffff:7f00:1", True),  # v4-mapped 127.0.0.1
    ],
)
def test_kernel_addresses_are_read_and_judged(hex_ip: str, address: str, loopback: bool) -> None:
    assert str(_address(hex_ip)) == address
    assert is_loopback(address) is loopback


@pytest.mark.slow
def test_emulator_and_worker_listen_on_loopback_only(proc: None, tmp_path: Path) -> None:
    config = EmbeddedConfig(
        state_dir=tmp_path / "state", outbox_dir=tmp_path / "outbox", save_state=False
    )
    with EmbeddedStack(config) as local:
        assert local.emulator.pid is not None
        assert local.worker is not None
        assert local.worker.pid is not None
        emulator = listening(local.emulator.pid)
        worker = listening(local.worker.pid)

    assert emulator, "the emulator must be listening somewhere"
    assert [a for a, _ in emulator if not is_loopback(a)] == []
    assert [a for a, _ in worker if not is_loopback(a)] == []
    assert local.endpoint.startswith("http://127.0.0.1:")
