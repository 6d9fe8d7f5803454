"""What snapbench reads off coremltools' objects, as Protocols.

coremltools ships no type information (mypy reads every name in it as `Any`), so each object the device
adapter (`coreml_api`), the converters and the estimator's program reader handle is typed here by the
attributes and methods they use, read from coremltools 9.0's source. A Protocol checks our side of the
seam: a misspelt attribute or a wrong argument fails mypy. That the names exist on the real classes is
`tests/test_coreml_contract.py`'s job, and the fakes in the tests are built from the real classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import IO, ClassVar, Protocol

import numpy as np

# -- the device API: `coremltools.models.ml_program.experimental` ---------------------------------------


class LaunchProcess(Protocol):
    """`subprocess.Popen` of `devicectl device process launch --console`."""

    @property
    def stderr(self) -> IO[bytes] | None: ...

    def poll(self) -> int | None: ...


class AppSession(Protocol):
    """`remote_device._AppSession`: the runner app launched on the phone."""

    @property
    def installation_info(self) -> object: ...

    @property
    def working_directory(self) -> Path: ...

    def is_alive(self) -> bool: ...

    def stop(self) -> None: ...

    def send_file_to_app(self, path: Path, destination: str) -> None: ...


class RemoteDevice(Protocol):
    """`remote_device.Device` (a dataclass): a connected phone, prepared or not (`session_alive` reads
    `session` with getattr: an unprepared one has None)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[object]]]  # `relaunch` replaces its session

    @property
    def udid(self) -> str: ...

    @property
    def session(self) -> AppSession: ...  # set on the prepared copy

    async def prepare_for_model_debugging(self, *, credentials: object, working_directory: Path,
                                          clean: bool) -> RemoteDevice: ...


class RpcRequest(Protocol):
    """`remote_device._JSONRPCRequest`."""

    @property
    def id(self) -> str: ...


class DeviceCtlSocket(Protocol):
    """`remote_device._DeviceCtlSocket`: requests and responses as files copied with devicectl."""

    @property
    def working_directory(self) -> Path: ...

    @property
    def device(self) -> RemoteDevice: ...

    @property
    def source(self) -> str: ...

    def send(self, request: RpcRequest, resource_path: Path | None = None) -> None: ...

    def receive(self, id: str) -> object: ...


class ComputePlan(Protocol):
    """`compute_plan.MLComputePlan` of a loaded model (read by `CoreMLTools.placement`)."""

    @property
    def model_structure(self) -> ModelStructure: ...

    def get_compute_device_usage_for_mlprogram_operation(self, operation: StructureOperation
                                                         ) -> DeviceUsage | None: ...


class ModelStructure(Protocol):
    @property
    def program(self) -> StructureProgram | None: ...


class StructureProgram(Protocol):
    @property
    def functions(self) -> Mapping[str, StructureFunction]: ...


class StructureFunction(Protocol):
    @property
    def block(self) -> StructureBlock: ...


class StructureBlock(Protocol):
    @property
    def operations(self) -> Sequence[StructureOperation]: ...


class StructureOperation(Protocol):
    @property
    def operator_name(self) -> str: ...


class DeviceUsage(Protocol):
    @property
    def preferred_compute_device(self) -> object: ...  # an instance of one of compute_device's classes


class AsyncModel(Protocol):
    """`async_wrapper.MLModelAsyncWrapper`: a package loaded on the phone or on this Mac."""

    @property
    def load_duration_in_nano_seconds(self) -> int | None: ...

    @property
    def last_predict_duration_in_nano_seconds(self) -> int | None: ...

    async def load(self) -> None: ...

    async def unload(self) -> None: ...

    async def predict(self, inputs: Mapping[str, np.ndarray], state: object = None) -> object: ...

    def make_state_if_needed(self) -> object: ...

    async def retrieve_compute_plan(self) -> ComputePlan: ...

    def cleanup(self) -> None: ...


# -- a package's interface, from its protobuf spec (`coremltools.proto`) -----------------------------------


class ArrayFeature(Protocol):
    """`FeatureTypes_pb2.ArrayFeatureType`."""

    @property
    def shape(self) -> Sequence[int]: ...

    @property
    def dataType(self) -> int: ...  # the protobuf field's name


class FeatureType(Protocol):
    @property
    def multiArrayType(self) -> ArrayFeature: ...

    def WhichOneof(self, oneof_group: str) -> str | None: ...


class FeatureDescription(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def type(self) -> FeatureType: ...


class ModelDescription(Protocol):
    """`Model_pb2.ModelDescription`: the package's inputs and outputs."""

    @property
    def input(self) -> Iterable[FeatureDescription]: ...


class ArrayDataTypes(Protocol):
    """`FeatureTypes_pb2.ArrayFeatureType.ArrayDataType`, the enum of multi-array element types."""

    @property
    def INT32(self) -> int: ...


# -- a converted model and its MIL program (`coremltools.models.MLModel`, `converters.mil`) ----------------


class MilVar(Protocol):
    """A pymil `Var`: an op's input or output."""

    _sym_val: object  # what value inference reads as `val` (mil_eval sets it to feed an input)

    @property
    def name(self) -> str: ...

    @property
    def val(self) -> object: ...  # the constant's value (an np.ndarray or a scalar), None when not constant

    @property
    def op(self) -> MilOp | None: ...

    @property
    def child_ops(self) -> Sequence[MilOp]: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> type: ...

    def sym_type(self) -> SymValue: ...

    def is_tensor_or_scalar_of(self, dtype: str) -> bool: ...


class SymValue(Protocol):
    """A pymil type instance holding a value (`Var.sym_type()`)."""

    val: object


class MilOp(Protocol):
    """A pymil `Operation`. Its inputs are also its attributes, by name (`op.x`, `op.batch_dims`): pymil's
    `Operation.__getattr__`, which `__getattr__` here stands for."""

    @property
    def name(self) -> str: ...

    @property
    def op_type(self) -> str: ...

    @property
    def outputs(self) -> Sequence[MilVar]: ...

    @property
    def inputs(self) -> Mapping[str, MilVar | Sequence[MilVar]]: ...

    @property
    def blocks(self) -> Sequence[MilBlock]: ...

    def type_value_inference(self, overwrite_output: bool = False) -> object: ...

    def __getattr__(self, name: str) -> MilVar: ...


class MilBlock(Protocol):
    """A pymil `Block`: its ops in program order."""

    @property
    def operations(self) -> Sequence[MilOp]: ...


class MilFunction(MilBlock, Protocol):
    """A pymil `Function`: a block with named inputs and its outputs."""

    @property
    def inputs(self) -> Mapping[str, MilVar]: ...

    @property
    def outputs(self) -> Sequence[MilVar]: ...


class MilProgram(Protocol):
    @property
    def functions(self) -> Mapping[str, MilFunction]: ...

    def validate(self, check_essential_scope: bool = False) -> None: ...


class PassPipeline(Protocol):
    """coremltools' `PassPipeline`: the names of the MIL passes it runs, in order."""

    @property
    def passes(self) -> list[str]: ...


class MLModel(Protocol):
    """`coremltools.models.MLModel`: what the converters set and call on a converted model. `_mil_program` is
    the in-memory program of a freshly converted model (None once dropped, or for a model loaded from a
    spec)."""

    author: str
    short_description: str
    _mil_program: MilProgram | None

    @property
    def user_defined_metadata(self) -> MutableMapping[str, str]: ...

    def save(self, path: str) -> None: ...

    def get_spec(self) -> object: ...  # the protobuf Model (read field by field by the estimator)


class Predicts(Protocol):
    """An `MLModel` loaded for prediction (macOS): inputs by name in, outputs by name out."""

    def predict(self, data: Mapping[str, np.ndarray]) -> Mapping[str, object]: ...
