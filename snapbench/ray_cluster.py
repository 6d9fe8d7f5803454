"""Joining a Ray cluster, for whoever fans work out over one (evolution's evaluations, the device farm)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, MutableMapping
from types import ModuleType
from urllib.parse import urlparse

from snapbench.errors import SnapbenchError, first_line

# Ray's own timeouts, longer for a cluster on a loaded 2-core machine, where a GCS busy for a minute is not a
# dead one (checked: with RAY_gcs_rpc_server_reconnect_timeout_s=5, a driver whose GCS was killed printed
# "rpc_client.h:204: Failed to connect to GCS within 5 seconds" and exited, the line CI saw with 60).
# Ray reads each from the environment under these names (ray 2.60): its C++ core as RAY_<setting> in every
# Ray process (they inherit the environment of the process that starts them), its Python side in
# `ray._private.ray_constants` when ray is imported and in `ray._private.node`.
# - gcs_rpc_server_reconnect_timeout_s (60): a process that has not reached the GCS for this long exits;
# - gcs_server_request_timeout_seconds (60): how long the Python side waits for the GCS's node records;
# - gcs_server_port_wait_time_s (30): how long a starting head waits for its GCS to bind its port.
# A value the user set stays.
RAY_TIMEOUTS = {"RAY_gcs_rpc_server_reconnect_timeout_s": "300", "RAY_gcs_server_request_timeout_seconds": "300",
                "RAY_gcs_server_port_wait_time_s": "120"}


@contextlib.contextmanager
def patient_ray(environ: MutableMapping[str, str] = os.environ) -> Iterator[dict[str, str]]:
    """`RAY_TIMEOUTS` (those the user has not set) in the environment while Ray is imported and started;
    yields the ones set. Ray's processes keep them; this process's environment is as it was afterwards."""
    added = {k: v for k, v in RAY_TIMEOUTS.items() if k not in environ}
    environ.update(added)
    try:
        yield added
    finally:
        for k in added:
            environ.pop(k, None)


def import_ray(what: str) -> ModuleType:
    """`ray` (or one line naming the extra that brings it), imported with `RAY_TIMEOUTS` in place."""
    from snapbench.extras import require

    with patient_ray():
        return require("ray", "scale", what)


def _did_not_come_up(e: BaseException) -> bool:
    """A start that ran out of time (Ray raises a plain Exception when its node times out during startup)."""
    return isinstance(e, (TimeoutError, ConnectionError)) or "timed out" in str(e).lower()


def start_local(ray: ModuleType, *, num_cpus: int | None, say: Callable[[str], None] | None = None) -> None:
    """A private local Ray cluster, with `RAY_TIMEOUTS`; started once more (after a line saying so) when its
    head does not come up in time on a loaded machine, and one line if it does not come up then either.

    `address="local"`, not None: without an address `ray.init` joins a cluster it finds on this machine
    ($RAY_ADDRESS, or the last one `ray start` or a test's `cluster_utils.Cluster` recorded in
    /tmp/ray/ray_current_cluster), and a run that joined another's cluster dies about 60 s after that
    cluster stops ("Failed to connect to GCS within 60 seconds": selftest's `evolve --ray-address local`,
    a minute after another suite's Ray cluster stopped on the same machine)."""
    for attempt in (1, 2):
        try:
            with patient_ray():
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return
        except Exception as e:  # Ray's startup timeout is a plain Exception; any other is raised again
            if not _did_not_come_up(e):
                raise
            with contextlib.suppress(Exception):  # whatever the failed start left behind, if anything
                ray.shutdown()
            if attempt == 2:
                raise SnapbenchError(f"Ray's local cluster did not come up, twice ({first_line(e, default=type(e).__name__)}); "
                                     "the machine may be overloaded: run again later, or use --workers N "
                                     "instead of --ray-address local") from None
            if say is not None:
                say(f"Ray's local cluster did not come up ({first_line(e, default=type(e).__name__)}); "
                    "starting it once more")


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
    ray = import_ray(what)
    check_ray_address(address)
    if ray.is_initialized():
        return ray, False
    try:
        with patient_ray():
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SnapbenchError(f"Ray at {address} does not answer ({first_line(e, default=type(e).__name__)}); "
                             "start it with `ray start --head`") from None
    return ray, True
