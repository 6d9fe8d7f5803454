"""`make mutate-device`: do the device-adapter tests catch small, realistic mistakes in the adapter?

Each mutation below is one edit a person (or coremltools itself: two of them are its own bugs) could make
to `snapbench/profilers/coreml_api.py` or `backends.py`: a renamed call, a renamed keyword, sync and async
swapped, an enum member swapped, the patched request class constructed wrongly. For each, a copy of the
`snapbench` package with that one edit is put first on the path and the device tests run against it; a
mutation is caught when they fail. It prints one table row per mutation and exits 1 if any survived.
Not part of `make test`: it runs the device tests once per mutation (minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_coreml_contract.py", "tests/test_device_first_run.py", "tests/test_profile_backends.py"]
API, BACKENDS = "snapbench/profilers/coreml_api.py", "snapbench/profilers/backends.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    kind: str
    file: str
    old: str
    new: str


MUTATIONS = [
    Mutation("DeviceType.IPHONE -> IPAD", "enum member swapped", API,
             "get_connected_devices(rd.DeviceType.IPHONE)", "get_connected_devices(rd.DeviceType.IPAD)"),
    Mutation("patched request class: attempts= for max_attempts=", "patched class constructed wrongly", API,
             "poll_time=poll_time, max_attempts=max_attempts)", "poll_time=poll_time, attempts=max_attempts)"),
    Mutation("patched request class: poll_interval= for poll_time=", "patched class constructed wrongly",
             API, "super().__init__(_LiveSocket(socket, files), poll_time=poll_time,",
             "super().__init__(_LiveSocket(socket, files), poll_interval=poll_time,"),
    Mutation("prepare_for_model_debugging -> prepare_for_debugging", "renamed call", API,
             "await phone.prepare_for_model_debugging(", "await phone.prepare_for_debugging("),
    Mutation("get_compute_device_usage_for_mlprogram_operation -> get_compute_device_usage", "renamed call", API,
             "plan.get_compute_device_usage_for_mlprogram_operation(op)", "plan.get_compute_device_usage(op)"),
    Mutation("working_directory= -> working_dir=", "renamed keyword", API,
             "working_directory=working_dir, clean=clean)", "working_dir=working_dir, clean=clean)"),
    Mutation("launch_app(installation_info=) -> app_path= (coremltools' own Device._launch_app)", "renamed keyword",
             API, "launch_app(device=device, installation_info=old.installation_info,",
             "launch_app(device=device, app_path=old.installation_info,"),
    Mutation("session.is_alive() read, not called (coremltools' own _DeviceCtlSocket)", "sync call left uncalled",
             API, "bool(session.is_alive())", "bool(session.is_alive)"),
    Mutation("await model.load() left unawaited", "sync/async swapped", API,
             'await self._within(f"loading {path.name}", model.load())',
             'self._within(f"loading {path.name}", model.load())'),
    Mutation("make_state_if_needed() awaited", "sync/async swapped", API,
             "model.predict(inputs, state=model.make_state_if_needed())",
             "model.predict(inputs, state=await model.make_state_if_needed())"),
    Mutation("MLNeuralEngineComputeDevice -> MLGPUComputeDevice", "enum member swapped", API,
             '(devices.MLNeuralEngineComputeDevice, "ane")', '(devices.MLGPUComputeDevice, "ane")'),
    Mutation("ComputeUnit CPU_AND_NE -> CPU_AND_GPU", "enum member swapped", API,
             '"cpu_and_ne": "CPU_AND_NE"', '"cpu_and_ne": "CPU_AND_GPU"'),
    Mutation("development_team= given the bundle id", "renamed keyword", API,
             "development_team=signing.team_id,", "development_team=signing.bundle_id,"),
    Mutation("MLModelService.Prediction -> MLModelService.Predict (inputs left on the Mac)", "renamed call", API,
             'name == "MLModelService.Prediction"', 'name == "MLModelService.Predict"'),
    Mutation("request limit not enforced (wait_for dropped)", "limit removed", API,
             "return await asyncio.wait_for(request, self._time_limit_s)", "return await request"),
    Mutation("runner never rebuilt (clean=False, as before)", "argument value reverted", BACKENDS,
             "folder, clean=bool(why))", "folder, clean=False)"),
    Mutation("launched app never checked (as before)", "check removed", BACKENDS,
             "        return self.running(prepared, target)\n", "        return prepared\n"),
]


def mutant(tmp: Path, m: Mutation | None) -> None:
    """`tmp` = the repository with a private copy of `snapbench/` (everything else linked), `m` applied."""
    for entry in ROOT.iterdir():
        if entry.name in ("snapbench", ".git", ".venv") or entry.name.startswith("."):
            continue
        (tmp / entry.name).symlink_to(entry)
    shutil.copytree(ROOT / "snapbench", tmp / "snapbench", ignore=shutil.ignore_patterns("__pycache__"))
    if m is None:
        return
    target = tmp / m.file
    text = target.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"mutation {m.name!r} no longer applies to {m.file} (found {text.count(m.old)} times): "
                         "update tests/mutate_device.py")
    target.write_text(text.replace(m.old, m.new))


def run_tests(tmp: Path, timeout_s: float = 900) -> tuple[int, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "SNAPBENCH_CACHE": str(ROOT / ".snapbench-cache")}
    # `python -m pytest` puts the working folder first on sys.path: the mutated copy shadows the editable install
    where = subprocess.run([sys.executable, "-c", "import snapbench; print(snapbench.__file__)"], cwd=tmp, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(tmp)):
        raise SystemExit(f"the mutated copy is not the snapbench the tests import ({where})")
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider",
                            *TESTS], cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    return p.returncode, p.stdout + p.stderr


def first_failure(output: str) -> str:
    m = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    return m.group(1).split("::")[-1] if m else ("timed out" if output == "timed out" else "?")


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "base"
        tmp.mkdir()
        mutant(tmp, None)
        code, out = run_tests(tmp)
        if code != 0:
            print(out[-3000:])
            print("the device tests fail without any mutation: fix them first")
            return 2
    rows, survived = [], 0
    print(f"{'#':>2}  {'mutation':72}  {'kind':34}  result")
    for i, m in enumerate(MUTATIONS, 1):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d) / "mutant"
            tmp.mkdir()
            mutant(tmp, m)
            t0 = time.monotonic()
            code, out = run_tests(tmp)
            took = time.monotonic() - t0
        caught = code != 0
        survived += not caught
        result = f"caught by {first_failure(out)} ({took:.0f} s)" if caught else "SURVIVED"
        rows.append((i, m, result))
        print(f"{i:>2}  {m.name:72}  {m.kind:34}  {result}", flush=True)
    print(f"{len(MUTATIONS) - survived}/{len(MUTATIONS)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
