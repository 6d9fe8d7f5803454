"""Joining a Ray cluster, for whoever fans work out over one (evolution's evaluations, the device farm)."""

from __future__ import annotations

import socket
from types import ModuleType
from urllib.parse import urlparse

from snapbench.errors import SnapbenchError, first_line


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """A host:port (or ray://host:port) that does not accept a TCP connection fails here, in seconds,
    instead of inside ray.init's long retry loop."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise SnapbenchError(f"--ray-address {address!r}: expected host:port, ray://host:port, 'auto' or 'local'")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise SnapbenchError(f"Ray at {address} does not answer ({e.strerror or e}); start it with "
                             "`ray start --head` or leave out --ray-address for local workers") from None


def connect(address: str, what: str) -> tuple[ModuleType, bool]:
    """`ray`, connected to the cluster at `address`; and whether this call connected it (then the caller
    shuts it down). `what` names the feature for the missing-extra message."""
    from snapbench.extras import require

    ray = require("ray", "scale", what)
    check_ray_address(address)
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SnapbenchError(f"Ray at {address} does not answer ({first_line(e, default=type(e).__name__)}); "
                             "start it with `ray start --head`") from None
    return ray, True
