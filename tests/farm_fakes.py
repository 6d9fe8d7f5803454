"""What a device-farm node measures with in the tests: the iphone backend over `profile_fakes.FakeCoreML`
(coremltools' real classes and signatures), with the phone of the asked model attached, a little time per
package (so a node can be killed while one is in flight), and a log line per package it finished (so a
test can count how often each package was measured, whatever the driver believes)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from snapbench.profilers.backends import DeviceBackend
from snapbench.profilers.coreml_api import CoreMLTools, Signing
from snapbench.profilers.farm import NodeSettings

PRODUCTS = {"iphone14pro": "iPhone15,2", "iphone15pro": "iPhone16,1"}
LOG_ENV, DELAY_ENV = "SNAPBENCH_FARM_TEST_LOG", "SNAPBENCH_FARM_TEST_DELAY_S"


class LoggedCoreMLTools(CoreMLTools):
    """The adapter as it is, timing each package a little longer and logging the ones it finished."""

    def __init__(self, ct: Any, device_id: str) -> None:
        super().__init__(ct)
        self.device_id = device_id

    async def time_package(self, path: Path, **kw: Any) -> Any:
        import ray

        await asyncio.sleep(float(os.environ.get(DELAY_ENV, "0.3")))
        timing = await super().time_package(path, **kw)
        with open(os.environ[LOG_ENV], "a") as log:  # one short line per write: appends do not interleave
            log.write(f"{ray.get_runtime_context().get_node_id()} {self.device_id} {path.name}\n")
        return timing


def fake_node_backend(device_id: str, settings: NodeSettings) -> DeviceBackend:
    import tempfile

    from profile_fakes import FakeCoreML, devicectl_entry, fake_mac

    here = Path(tempfile.mkdtemp(prefix=f"farm-node-{device_id}-"))
    udid = f"00008120-{abs(hash(device_id)) % 10**4:04d}"
    fake = FakeCoreML(udid=udid)
    machine = fake_mac(here, devices=[devicectl_entry(name=f"Phone {device_id}", product=PRODUCTS[device_id],
                                                      udid=udid)])
    return DeviceBackend("iphone", api=LoggedCoreMLTools(fake.ct, device_id), machine=machine,
                         signing=Signing.for_team("ABCDE12345"), runner_dir=here / "runner",
                         compute_units=settings.compute_units, warmup=settings.warmup, repeats=settings.repeats,
                         sleep=lambda s: None)
