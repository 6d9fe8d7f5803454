"""manifest.json: what a conversion folder holds, block by block; and how a folder is claimed safely.

The manifest is rewritten atomically each time a package lands, so a run killed halfway leaves a
manifest that lists exactly the finished packages (the next run resumes from it), and `complete` says
whether every block was done. Paths in it are relative to the folder, so a folder can be moved.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, TypeGuard

from snapbench.atomic import atomic_write_text
from snapbench.converters.package_io import TensorEntry
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject
from snapbench.locks import FOLDER_LOCK, folder_lock, pid_alive
from snapbench.names import safe_file_name
from snapbench.paths import choose_another
from snapbench.user_files import read_user_json

if TYPE_CHECKING:  # typing has it from 3.11; the annotation is never evaluated (postponed annotations)
    from typing_extensions import NotRequired

FORMAT = "snapbench.manifest/1"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = FOLDER_LOCK
# temporaries snapbench itself leaves when killed: .NAME.PID.partial (packages), .manifest.json.*.tmp
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.partial$|^\.manifest\.json\..+\.tmp$|^\.snapbench\.")


class ManifestBlockDoc(TypedDict):
    """A `ManifestBlock` as manifest.json holds it (the fields a reader of an older manifest may miss are
    NotRequired: they read as None)."""

    id: str
    file_id: str
    stage: str
    kind: str
    status: str
    module: str
    signature: str | None
    signature_digest: str | None
    package: str | None
    inputs: list[TensorEntry]
    outputs: list[TensorEntry]
    params: int
    macs: int
    macs_no_attention: int
    state: str
    package_owner: NotRequired[str | None]
    weights_hash: NotRequired[str | None]
    cache_key: NotRequired[str | None]
    seconds: NotRequired[float | None]
    bytes: NotRequired[int | None]
    error: NotRequired[str | None]
    files: NotRequired[dict[str, int] | None]
    ane_psnr_db: NotRequired[float | None]
    timings: NotRequired[dict[str, float] | None]
    weights_read: NotRequired[str | None]


class ManifestDoc(TypedDict):
    """manifest.json (`Manifest.to_dict`); what an older manifest may lack is NotRequired."""

    format: str
    content: str
    model: str
    spec: str
    complete: NotRequired[bool]
    options: NotRequired[JSONObject]
    compression: NotRequired[JSONObject]
    shapes: NotRequired[JSONObject]
    versions: NotRequired[dict[str, str]]
    source_fingerprint: NotRequired[str | None]
    run_key: NotRequired[str | None]
    created_at: NotRequired[str]
    updated_at: NotRequired[str]
    packages: NotRequired[int]
    blocks: NotRequired[list[ManifestBlockDoc]]
    missing: NotRequired[list[str]]


def is_manifest_doc(data: object) -> TypeGuard[ManifestDoc]:
    """A JSON document that says it is a manifest of this format (its fields are read as `from_dict` goes)."""
    return isinstance(data, dict) and data.get("format") == FORMAT


@dataclass(frozen=True)
class ManifestBlock:
    id: str
    file_id: str
    stage: str
    kind: str  # RB | CA | aux | a component name
    status: str  # kept | removed | copy (components: kept)
    module: str
    signature: str | None  # None: removed with nothing left to run
    signature_digest: str | None
    package: str | None  # relative path of the .mlpackage; None: not converted (no compute, pending, failed)
    inputs: list[TensorEntry]
    outputs: list[TensorEntry]
    params: int
    macs: int
    macs_no_attention: int
    state: str  # done | pending | failed | no_compute
    package_owner: str | None = None  # profile mode: the block whose conversion made the shared package
    weights_hash: str | None = None  # deploy mode and whole models: hash of the weights in the package
    cache_key: str | None = None
    seconds: float | None = None  # conversion time of its package; shared packages: on the owner only
    bytes: int | None = None  # size of its package; shared packages: on the owner only
    error: str | None = None
    files: dict[str, int] | None = None  # the package's files and sizes as converted: a reuse verifies them
    ane_psnr_db: float | None = None  # app pipeline: worst PSNR of its ANE attention rewrites vs PyTorch
    timings: dict[str, float] | None = None  # app pipeline: seconds per phase (build, trace, convert, ...)
    weights_read: str | None = None  # app pipeline: the checkpoint files its weights came from (which variant)

    def to_dict(self) -> JSONObject:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: ManifestBlockDoc) -> ManifestBlock:
        """The block of a manifest entry (keys it does not know are left: a newer snapbench wrote them)."""
        return cls(id=d["id"], file_id=d["file_id"], stage=d["stage"], kind=d["kind"], status=d["status"],
                   module=d["module"], signature=d["signature"], signature_digest=d["signature_digest"],
                   package=d["package"], inputs=d["inputs"], outputs=d["outputs"], params=d["params"], macs=d["macs"],
                   macs_no_attention=d["macs_no_attention"], state=d["state"], package_owner=d.get("package_owner"),
                   weights_hash=d.get("weights_hash"), cache_key=d.get("cache_key"), seconds=d.get("seconds"),
                   bytes=d.get("bytes"), error=d.get("error"), files=d.get("files"), ane_psnr_db=d.get("ane_psnr_db"),
                   timings=d.get("timings"), weights_read=d.get("weights_read"))


@dataclass
class Manifest:
    content: str  # "blocks", or a whole model: "unet" | "text_encoder" | "vae_decoder"
    model: str
    spec: str
    options: JSONObject
    versions: dict[str, str]
    shapes: JSONObject
    blocks: list[ManifestBlock]
    compression: JSONObject = field(default_factory=dict)
    source_fingerprint: str | None = None
    run_key: str | None = None  # everything the run depended on: equal and complete -> nothing to do
    complete: bool = False
    created_at: str = ""
    updated_at: str = ""
    folder: Path | None = None  # where it was loaded from / will be written (not serialised)
    missing: list[str] = field(default_factory=list)  # app pipeline: parts the model folder lacks

    def to_dict(self) -> JSONObject:
        return {
            "format": FORMAT,
            "content": self.content,
            "model": self.model,
            "spec": self.spec,
            "complete": self.complete,
            "options": self.options,
            "compression": self.compression,
            "shapes": self.shapes,
            "versions": dict(self.versions),
            "source_fingerprint": self.source_fingerprint,
            "run_key": self.run_key,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "packages": len({b.package for b in self.blocks if b.package}),
            "blocks": [b.to_dict() for b in self.blocks],
            **({"missing": list(self.missing)} if self.missing else {}),
        }

    @classmethod
    def from_dict(cls, d: ManifestDoc, folder: Path | None = None) -> Manifest:
        return cls(
            content=d["content"], model=d["model"], spec=d["spec"], options=d.get("options", {}),
            versions=d.get("versions", {}), shapes=d.get("shapes", {}),
            blocks=[ManifestBlock.from_dict(b) for b in d.get("blocks", [])],
            compression=d.get("compression", {}), source_fingerprint=d.get("source_fingerprint"),
            run_key=d.get("run_key"),            complete=bool(d.get("complete")), created_at=d.get("created_at", ""),
            updated_at=d.get("updated_at", ""), folder=folder, missing=list(d.get("missing", [])),
        )

    def block(self, block_id: str) -> ManifestBlock:
        for b in self.blocks:
            if block_id in (b.id, b.file_id):
                return b
        raise SnapbenchError(f"no block {block_id!r} in the manifest of {self.folder}")

    def package_path(self, block_id: str) -> Path | None:
        b = self.block(block_id)
        if b.package is None:
            return None
        return (self.folder or Path(".")) / b.package

    def write(self, folder: Path | None = None) -> Path:
        folder = Path(folder or self.folder or ".")
        now = _now()
        self.created_at = self.created_at or now
        self.updated_at = now
        return atomic_write_text(folder / MANIFEST_FILE, json.dumps(self.to_dict(), indent=2) + "\n")


def same_model_ref(a: str, b: str) -> bool:
    """Two --model values naming one model: equal, or paths to the same file or folder."""
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def load_manifest(folder: str | os.PathLike) -> Manifest:
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise SnapbenchError(f"{folder}: no {MANIFEST_FILE}; not a snapbench conversion folder "
                             "(make one with 'snapbench convert --out FOLDER')")
    data = read_user_json(path, "manifest")
    if not is_manifest_doc(data):
        raise SnapbenchError(f"{path}: not a snapbench manifest (expected format {FORMAT!r})")
    try:
        return Manifest.from_dict(data, folder)
    except (KeyError, TypeError) as e:
        raise SnapbenchError(f"{path}: malformed manifest ({e})") from None


# -- claiming an output folder ---------------------------------------------------------------------------


def inspect_out_dir(folder: Path, content: str, model: str | None = None, spec: str | None = None) -> Manifest | None:
    """The previous manifest of a folder we may write into, or None; refuses anything else in one line.

    A folder belongs to the model (`model` as given, `spec` its spec's name) first converted into it:
    converting another one there would replace its manifest and orphan its packages, so it is refused,
    naming the owner. Read-only: nothing is created, so a refused run leaves nothing behind.
    """
    if folder.exists() and not folder.is_dir():
        raise SnapbenchError(f"{folder}: exists and is not a folder; choose another --out")
    if not folder.exists():
        return None
    names = [p.name for p in folder.iterdir()]
    if MANIFEST_FILE in names:
        try:
            previous = load_manifest(folder)
        except SnapbenchError:
            raise SnapbenchError(f"{folder}: its {MANIFEST_FILE} is not a snapbench manifest; refusing to write "
                                 "into a folder with foreign content (choose another --out)") from None
        if previous.content != content:
            raise SnapbenchError(f"{folder}: holds a {previous.content!r} conversion, not {content!r}; "
                                 "use another --out for it")
        if (model is not None and not same_model_ref(previous.model, model)) or \
                (spec is not None and previous.spec != spec):
            raise SnapbenchError(f"{folder}: holds the conversion of {previous.model} (spec {previous.spec!r}), "
                                 f"not {model} (spec {spec!r}); use another --out, e.g. {folder / safe_file_name(spec or 'model')}")
        return previous
    foreign = [n for n in names if not _TEMP.match(n)]
    if foreign:
        raise SnapbenchError(f"{folder}: exists with foreign content ({foreign[0]}"
                             f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}) and no {MANIFEST_FILE}; "
                             "refusing to write into it (choose a new or empty --out)")
    return None


@contextlib.contextmanager
def claimed(folder: Path) -> Iterator[None]:
    """Create the folder if needed, prove it writable, hold a lock file, remove stale temporaries.

    If the folder did not exist and the run fails before writing anything, it is removed again.
    """
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".snapbench.probe.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SnapbenchError(f"{folder}: cannot write there ({e.strerror or e}); {choose_another(folder)}") from None
    try:
        with folder_lock(folder, "convert"):
            remove_stale_temporaries(folder)
            yield
    finally:
        if created and not any(folder.iterdir()):
            with contextlib.suppress(OSError):
                folder.rmdir()


def remove_stale_temporaries(folder: Path) -> None:
    """Remove what a killed snapbench left in `folder`: `.NAME.PID.partial` folders whose process is gone
    (or is this one), and unfinished manifest writes."""
    from snapbench.converters.convert_package import remove_tree

    for p in folder.iterdir():
        m = _TEMP.match(p.name)
        if not m or p.name == LOCK_FILE:
            continue
        pid = m.group("pid")
        if pid is not None and pid_alive(int(pid)) and int(pid) != os.getpid():
            continue  # a live worker of ours may still be writing it
        if p.name.startswith(".snapbench.") and not p.name.startswith(".snapbench.probe"):
            continue
        remove_tree(p)


def remove_orphans(folder: Path, previous: Manifest | None, manifest: Manifest) -> None:
    """Remove the packages (and their compiled .mlmodelc) a previous run listed that this one no longer uses."""
    from snapbench.converters.convert_package import remove_tree

    if previous is None:
        return
    used = {b.package for b in manifest.blocks if b.package}
    for b in previous.blocks:
        if b.package and b.package not in used and "/" not in b.package and b.package.endswith(".mlpackage"):
            remove_tree(folder / b.package)
            remove_tree(folder / b.package.replace(".mlpackage", ".mlmodelc"))
