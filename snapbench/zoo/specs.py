"""Names of networks that are not SD UNets: `timm:NAME`, `torchvision:NAME`, `open_clip:NAME:text|image`,
`hf:ConfigClass[:JSON]`, `synthetic:NAME` and paths to existing `.mlpackage` / `.mlmodel` files.

    spec = parse_model_spec("timm:fastvit_t8")           # ModelSpec(kind="timm", name="fastvit_t8")
    spec = parse_model_spec("torchvision:mobilenet_v2:{\"width_mult\":1.3}")
    shape = parse_shape("1x3x256x256")                    # (1, 3, 256, 256)

Parsing needs no heavy import; building the network (builders.py) imports the library it names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject

KINDS = ("timm", "torchvision", "open_clip", "hf", "synthetic")
PACKAGE_SUFFIXES = (".mlpackage", ".mlmodel")
MAX_INPUT_ELEMENTS = 64 * 2**20  # one input tensor above 64 M elements is a typo, not a network


@dataclass(frozen=True)
class ModelSpec:
    """One network. `options` are constructor keyword arguments (JSON after the name)."""

    kind: str  # one of KINDS, or "package"
    name: str  # the library's name (timm/torchvision/open_clip/hf config class) or a package path
    tower: str = ""  # open_clip only: text | image
    options: JSONObject = field(default_factory=dict)

    @property
    def text(self) -> str:
        if self.kind == "package":
            return self.name
        parts = [self.kind, self.name] + ([self.tower] if self.tower else [])
        if self.options:
            parts.append(json.dumps(self.options, sort_keys=True, separators=(",", ":")))
        return ":".join(parts)

    def slug(self) -> str:
        """A file-name-safe short name."""
        base = Path(self.name).stem if self.kind == "package" else f"{self.kind}-{self.name}-{self.tower}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-")[:80]


def is_network_spec(text: str) -> bool:
    """True for names this module handles (so `--model` knows it is not an SD preset or checkpoint)."""
    t = str(text)
    return t.split(":", 1)[0] in KINDS and ":" in t or t.rstrip("/").endswith(PACKAGE_SUFFIXES)


def parse_model_spec(text: str) -> ModelSpec:
    t = str(text).strip()
    if t.rstrip("/").endswith(PACKAGE_SUFFIXES):
        p = Path(t)
        if not p.exists():
            raise SnapbenchError(f"Core ML model {p} not found")
        return ModelSpec("package", str(p))
    kind, _, rest = t.partition(":")
    if kind not in KINDS or not rest:
        raise SnapbenchError(f"model {t!r} is not KIND:NAME; KIND is one of {', '.join(KINDS)} "
                             "(or give a path to an .mlpackage / .mlmodel)")
    name, options_text, tower = rest, "", ""
    m = re.search(r":(?=[{\[])", rest)  # options: the JSON after the name
    if m:
        name, options_text = rest[:m.start()], rest[m.end():]
    if kind == "open_clip":
        name, _, tower = name.rpartition(":")
        if tower not in ("text", "image") or not name:
            raise SnapbenchError(f"model {t!r}: write open_clip:NAME:text or open_clip:NAME:image")
    options: JSONObject = {}
    if options_text:
        try:
            options = json.loads(options_text)
        except json.JSONDecodeError as exc:
            raise SnapbenchError(f"model {t!r}: options {options_text!r} are not JSON ({exc.msg})") from None
        if not isinstance(options, dict):
            raise SnapbenchError(f"model {t!r}: options must be a JSON object, got {options_text!r}")
    if not name:
        raise SnapbenchError(f"model {t!r} names no network after {kind}:")
    return ModelSpec(kind, name, tower, options)


def parse_shape(text: str | None, *, what: str = "--input") -> tuple[int, ...]:
    """'1x3x224x224' (or 1,3,224,224) -> (1, 3, 224, 224); anything else -> one clear error."""
    if text is None or not str(text).strip():
        raise SnapbenchError(f"{what} is empty; give a shape such as 1x3x224x224")
    parts = re.split(r"[x,×\s]+", str(text).strip().lower())
    try:
        shape = tuple(int(p) for p in parts if p)
    except ValueError:
        raise SnapbenchError(f"{what} {text!r} is not a shape; write it as 1x3x224x224") from None
    if not shape or any(d < 1 for d in shape):
        raise SnapbenchError(f"{what} {text!r}: every dimension must be a positive integer")
    n = 1
    for d in shape:
        n *= d
    if n > MAX_INPUT_ELEMENTS:
        raise SnapbenchError(f"{what} {text!r} has {n:,} elements, above the {MAX_INPUT_ELEMENTS:,} limit")
    return shape


# UNet-only settings a whole network would silently ignore: (flag, its default, why it does not apply)
_UNET_ONLY = {
    "--attention": ("original", "the Neural-Engine attention rewrites are made for SD UNets' attention blocks; a "
                                "network is converted as its library writes it (Hugging Face's (B, S, C) "
                                "attention is not rewritten to Apple's (B, C, 1, S) layout)"),
    "--compute-units": ("cpu_and_ne", "the estimator prices the Neural Engine only; time the package on a device "
                                      "to see other compute units"),
}


def refuse_unet_only(model: str, **given: str) -> None:
    """One line, instead of silently ignoring a UNet-only setting (`attention=`, `compute_units=`) that was
    given a non-default value for a whole network."""
    from snapbench.errors import SnapbenchError

    for key, value in given.items():
        flag = "--" + key.replace("_", "-")
        default, why = _UNET_ONLY[flag]
        if value != default:
            raise SnapbenchError(f"{flag} {value} does not apply to {model}: {why}; drop {flag}")
