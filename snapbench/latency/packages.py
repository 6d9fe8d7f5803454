"""Where the packages to time come from: the converters' profile-mode output, kept in a cache folder.

Profile mode converts one package per unique block signature (two blocks with one signature cost the
same), so SD-v1.5's blocks need far fewer conversions than blocks. Packages are kept under
`<cache>/packages/<model>-<settings hash>/` (the cache folder: snapbench.paths) and re-used: the
converters skip what already exists. A folder given with `--packages` (from `snapbench convert`) is used
as is, after checking that its manifest was made with this profile's settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from snapbench.errors import SnapbenchError, first_line
from snapbench.names import safe_file_name
from snapbench.paths import cache_root
from snapbench.settings import PIPELINE_PARTS, check_choice

if TYPE_CHECKING:  # annotations only: importing these here at run time would pull in torch
    from snapbench.converters.app_parts import AppPart
    from snapbench.converters.manifest import Manifest
    from snapbench.converters.options import ConvertOptions
    from snapbench.latency.table import Settings
    from snapbench.model.loading import ModelSource

COMPONENTS = PIPELINE_PARTS  # the parts priced beside the backbone
PARTS_DIR = "dit-parts"  # under the cache folder: a DiT pipeline's parts, one package each, named by cache key


def settings_hash(model_name: str, settings: Settings) -> str:
    # the same text as before `tokens` moved into Settings, so existing caches stay valid
    text = json.dumps({"model": model_name, "settings": settings.table_dict(), "tokens": settings.tokens},
                      sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


class PackageSource(Protocol):
    def block_packages(self, source: ModelSource, settings: Settings, keys: set[str], *, progress: bool) -> dict[str, Path]:
        """signature key -> package path, for (at least) the given keys."""

    def component_package(self, component: str, source: ModelSource, settings: Settings, *,
                          progress: bool) -> ComponentPackage:
        ...

    def part_package(self, part: AppPart, opts: ConvertOptions, source: ModelSource) -> Path:
        """One app part's package (a DiT pipeline's text encoder or decoder, or a slice of one)."""


@dataclass(frozen=True)
class ComponentPackage:
    path: Path
    params: int = 0
    macs: int = 0


def _entry(e: object, name: str) -> object:
    """A field of a manifest entry: a `ManifestBlock` (or anything with its attributes), or its JSON object."""
    return e.get(name) if isinstance(e, dict) else getattr(e, name, None)


def _text(e: object, name: str) -> str | None:
    v = _entry(e, name)
    return v if isinstance(v, str) else None


def _files(e: object) -> Mapping[str, int] | None:
    v = _entry(e, "files")
    return v if isinstance(v, dict) else None


def _count(e: object, name: str) -> int:
    v = _entry(e, name)
    return int(v) if isinstance(v, (int, float)) else 0


@runtime_checkable
class _Keyed(Protocol):
    """A block signature object (its key is what a manifest stores)."""

    def key(self) -> str: ...


_OPTION_FIELDS = ("attention", "weight_bits", "precision", "latent", "batch", "tokens")


def _wanted(settings: Settings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in _OPTION_FIELDS}


def check_manifest_settings(manifest: Manifest, folder: Path, settings: Settings) -> None:
    """Packages converted with other settings would be timed as if they had these: refuse, naming one."""
    opts = getattr(manifest, "options", {}) or {}
    for name, want in _wanted(settings).items():
        have = opts.get(name)
        if have is not None and str(have) != str(want):
            raise SnapbenchError(f"{folder}: packages were converted with {name} {have}, this profile uses "
                                 f"{want}; pass --{name.replace('_', '-')} {have} or convert again")


def cached_packages(settings: Settings, keys: set[str]) -> dict[str, Path]:
    """Packages with these signatures already converted for any model under the cache (evolution's
    candidates share almost every signature with the model they came from: no need to convert again)."""
    from snapbench.converters.convert_package import is_complete_package
    from snapbench.converters.manifest import load_manifest

    found: dict[str, Path] = {}
    root = cache_root() / "packages"
    if not root.is_dir():
        return found
    want = _wanted(settings)
    for mf in sorted(root.glob("*/manifest.json")):
        try:
            manifest = load_manifest(mf.parent)
        except SnapbenchError:
            continue  # a half-written or foreign folder: ignore it, the converters will redo it
        opts = manifest.options or {}
        if opts.get("mode") != "profile" or any(str(opts.get(k)) != str(v) for k, v in want.items()):
            continue
        for e in manifest.blocks:
            sig, pkg = _text(e, "signature"), _text(e, "package")
            if sig is not None and sig in keys and sig not in found and pkg and _entry(e, "state") in (None, "done") \
                    and is_complete_package(mf.parent / pkg, _files(e)):
                found[sig] = mf.parent / pkg  # a broken one is skipped: the converters make it again
    return found


def signature_packages(manifest: Manifest, folder: Path, keys: set[str]) -> dict[str, Path]:
    """Map the manifest's blocks to package paths by signature; a requested key the manifest lacks means
    the packages were converted with other settings (or another model)."""
    found: dict[str, Path] = {}
    for e in manifest.blocks:
        sig, pkg = _entry(e, "signature"), _text(e, "package")
        if sig is None or pkg is None:
            continue
        if not isinstance(sig, (str, _Keyed)):
            raise TypeError(f"{folder}: a manifest entry's signature is {sig!r}")
        key = sig if isinstance(sig, str) else sig.key()
        p = Path(pkg)
        found.setdefault(key, p if p.is_absolute() else folder / p)
    missing = sorted(keys - found.keys())
    if missing:
        raise SnapbenchError(f"{folder}: the packages do not match this profile's settings or model "
                             f"({len(missing)} block signatures missing, e.g. {missing[0]})")
    return found


def check_packages(manifest: Manifest, folder: Path, paths: set[Path]) -> None:
    """Refuse a conversion folder with a broken package (emptied, weights lost), naming it."""
    from snapbench.converters.convert_package import package_problem

    files = {folder / str(_entry(e, "package")): _files(e) for e in manifest.blocks if _entry(e, "package")}
    for path in sorted(paths):
        problem = package_problem(path, files.get(path))
        if problem is not None:
            raise SnapbenchError(f"{path}: broken package ({problem}); convert it again "
                                 f"(`snapbench convert` with the same options and --out {folder})")


@dataclass
class ConverterPackages:
    """Converts through `snapbench.converters` into the cache (or reads a given conversion folder)."""

    folder: Path | None = None  # --packages: a finished conversion folder to use as is

    def folder_for(self, source: ModelSource, settings: Settings) -> Path:
        """The cache folder of `source`'s block packages at `settings` (what `block_packages` converts into)."""
        return self._dir(source, settings)

    def _dir(self, source: ModelSource, settings: Settings, what: str = "") -> Path:
        name = source.spec.name
        # the spec's content is in the hash: two different specs with one name (evolution's variants) must
        # not share a folder (a conversion folder belongs to one model)
        spec_digest = hashlib.sha1(json.dumps(source.spec.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:8]
        return cache_root() / "packages" / f"{safe_file_name(name)}{what}-{settings_hash(name, settings)}-{spec_digest}"

    def block_packages(self, source: ModelSource, settings: Settings, keys: set[str], *, progress: bool) -> dict[str, Path]:
        if self.folder is not None:
            from snapbench.converters.manifest import load_manifest

            manifest = load_manifest(self.folder)
            check_manifest_settings(manifest, self.folder, settings)
            found = signature_packages(manifest, self.folder, keys)
            check_packages(manifest, self.folder, {found[k] for k in keys})
            return found
        reuse = cached_packages(settings, keys)
        if keys <= reuse.keys():
            return reuse
        from snapbench.converters.entry import ConvertRequest, convert
        from snapbench.converters.options import ConvertOptions

        out = self._dir(source, settings)
        result = convert(ConvertRequest(source, out, ConvertOptions.from_settings(settings), progress=progress,
                                        shared_folder=True))
        if result.failed:  # name them: "packages do not match" would send the user after the wrong cause
            block, error = result.failed[0]
            more = f" (and {len(result.failed) - 1} more)" if len(result.failed) > 1 else ""
            raise SnapbenchError(f"{len(result.failed)} block(s) failed to convert, so this profile cannot price "
                                 f"them: {block}{more}: {first_line(SnapbenchError(error))}; `snapbench convert` "
                                 "with the same options lists each failure")
        return signature_packages(result.manifest, out, keys)

    def part_package(self, part: AppPart, opts: ConvertOptions, source: ModelSource) -> Path:
        """Converted into the cache folder, named by its cache key: converted once for every device."""
        from snapbench.converters.pipeline import convert_part_cached

        return convert_part_cached(part, cache_root() / PARTS_DIR, opts, source)

    def component_package(self, component: str, source: ModelSource, settings: Settings, *, progress: bool) -> ComponentPackage:
        from snapbench.converters.entry import ConvertRequest, convert
        from snapbench.converters.options import ConvertOptions

        out = self._dir(source, settings, f"-{component}")
        result = convert(ConvertRequest(source, out, ConvertOptions.from_settings(settings),
                                        part=check_choice("component", component, PIPELINE_PARTS),
                                        progress=progress, shared_folder=True))
        done = [(b, pkg) for b in result.manifest.blocks if (pkg := _text(b, "package"))]
        if not done:
            raise SnapbenchError(f"{out}: the converters made no {component} package")
        b, pkg = done[0]
        p = Path(pkg)
        return ComponentPackage(p if p.is_absolute() else out / p, _count(b, "params"), _count(b, "macs"))
