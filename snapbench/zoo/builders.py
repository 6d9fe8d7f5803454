"""Build a `ModelSpec` as a PyTorch module with random weights (latency does not depend on weights).

    net = build_network(parse_model_spec("timm:mobileone_s0"), None)   # Network(module, io, ...)

timm networks are reparameterized where timm can (MobileOne, FastViT fuse their branches for inference,
as deployed). The libraries (timm, open_clip) are the `zoo` extra; a missing one is named in one line.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from snapbench.converters.convert_package import example_inputs
from snapbench.converters.package_io import PackageIO
from snapbench.errors import SnapbenchError, first_line
from snapbench.model.size_bound import bounded_build, bounded_real_build, check_activations
from snapbench.zoo.specs import ModelSpec, parse_shape

Shape = tuple[int, ...]


@dataclass
class Network:
    module: nn.Module
    io: PackageIO
    title: str


def _library(name: str, pip_name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise SnapbenchError(f"{name} is not installed; pip install 'snapbench[zoo]' (or pip install {pip_name})") from None


def _unknown(kind: str, name: str, known: list[str]) -> SnapbenchError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(f'{kind}:{c}' for c in close)}?" if close else f"see {kind}'s list of models"
    return SnapbenchError(f"unknown {kind} model {name!r}; {hint}")


def _need_shape(spec: ModelSpec, shape: Shape | None, default: Shape | None) -> Shape:
    if shape is not None:
        return shape
    if default is None:
        raise SnapbenchError(f"{spec.text} needs --input SHAPE (e.g. --input 1x3x224x224)")
    return default


class _FirstTensor(nn.Module):
    """Calls `fn(x)` and returns the first tensor of what comes back (HF outputs, tuples)."""

    def __init__(self, owner: nn.Module, fn: Callable[[torch.Tensor], object]):
        super().__init__()
        self.owner = owner
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fn(x)
        while not isinstance(out, torch.Tensor):
            if isinstance(out, (tuple, list)):
                out = out[0]
            elif isinstance(out, Mapping):  # transformers' ModelOutput
                out = next(v for v in out.values() if v is not None)
            else:
                raise TypeError(f"{type(out).__name__}: no tensor in the network's output")
        return out


def _image_io(shape: Shape) -> PackageIO:
    return PackageIO(inputs=(("x", shape),), outputs=(("out", None),))


def _tokens_io(shape: Shape) -> PackageIO:
    return PackageIO(inputs=(("input_ids", shape),), outputs=(("out", None),), int_inputs=frozenset({"input_ids"}))


def _timm(spec: ModelSpec, shape: Shape | None) -> Network:
    timm = _library("timm", "timm")
    if spec.name not in timm.list_models():
        raise _unknown("timm", spec.name, timm.list_models())
    model = timm.create_model(spec.name, pretrained=False, **spec.options).eval()
    try:
        from timm.utils.model import reparameterize_model

        model = reparameterize_model(model)
    except ImportError:  # older timm: no reparameterization helper; the training-time graph is priced
        pass
    default = (1, *model.pretrained_cfg["input_size"]) if getattr(model, "pretrained_cfg", None) else None
    shape = _need_shape(spec, shape, default)
    return Network(model, _image_io(shape), f"timm {spec.name}")


def _torchvision(spec: ModelSpec, shape: Shape | None) -> Network:
    tv = _library("torchvision", "torchvision")
    names = tv.models.list_models()
    if spec.name not in names:
        raise _unknown("torchvision", spec.name, names)
    model = tv.models.get_model(spec.name, weights=None, **spec.options).eval()
    return Network(model, _image_io(_need_shape(spec, shape, None)), f"torchvision {spec.name}")


def _open_clip(spec: ModelSpec, shape: Shape | None) -> Network:
    oc = _library("open_clip", "open_clip_torch")
    names = oc.list_models()
    if spec.name not in names:
        raise _unknown("open_clip", spec.name, names)
    model = oc.create_model(spec.name, pretrained=None, **spec.options).eval()
    if spec.tower == "text":
        shape = _need_shape(spec, shape, (1, int(getattr(model, "context_length", 77))))
        return Network(_FirstTensor(model, model.encode_text), _tokens_io(shape), f"open_clip {spec.name} text")
    size = getattr(model.visual, "image_size", 224)
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    shape = _need_shape(spec, shape, (1, 3, *size))
    return Network(_FirstTensor(model, model.encode_image), _image_io(shape), f"open_clip {spec.name} image")


_HF_AUTO = ("AutoModel", "AutoModelForDepthEstimation", "AutoModelForObjectDetection",
            "AutoModelForSemanticSegmentation", "AutoModelForImageClassification", "AutoModelForSequenceClassification",
            "AutoModelForCausalLM")


def _hf(spec: ModelSpec, shape: Shape | None) -> Network:
    import transformers

    configs = [n for n in dir(transformers) if n.endswith("Config") and n != "PretrainedConfig"]
    if spec.name not in configs:
        if spec.name.startswith(("UNet", "Autoencoder", "Transformer2D", "SD3", "Flux")):
            raise SnapbenchError(f"{spec.text}: a diffusers class, not a transformers config; give an SD UNet as "
                                 "--model PRESET, an arch spec .json or a diffusers model folder")
        raise _unknown("hf", spec.name, configs)
    try:
        config = getattr(transformers, spec.name)(**spec.options)
    except (TypeError, ValueError) as exc:
        raise SnapbenchError(f"{spec.text}: {spec.name} refuses these options ({str(exc).splitlines()[0][:200]})") from None
    model = None
    for auto in _HF_AUTO:  # the bare model first, then the task heads (depth, detection, ...) a config may only have
        try:
            model = getattr(transformers, auto).from_config(config).eval()
            break
        except (ValueError, KeyError, AttributeError):
            continue
    if model is None:
        raise SnapbenchError(f"{spec.text}: transformers has no model for this config, bare or with a task head "
                             f"({', '.join(a.removeprefix('AutoModelFor') for a in _HF_AUTO[1:])})")
    shape = _need_shape(spec, shape, None)
    if len(shape) == 2:  # token ids
        return Network(_FirstTensor(model, lambda ids: model(input_ids=ids)), _tokens_io(shape), f"hf {spec.name}")
    return Network(_FirstTensor(model, lambda px: model(pixel_values=px)), _image_io(shape), f"hf {spec.name}")


# ---- synthetic graphs of published micro-benchmarks (plain PyTorch) ----------------------------------------


class _Attention(nn.Module):
    """Keras MultiHeadAttention: heads x key_dim projections that need not equal the model width."""

    def __init__(self, dim: int, heads: int, key_dim: int):
        super().__init__()
        inner = heads * key_dim
        self.heads, self.key_dim = heads, key_dim
        self.q, self.k, self.v = (nn.Linear(dim, inner) for _ in range(3))
        self.o = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, self.heads, self.key_dim).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(ctx)), split(self.v(ctx))
        w = torch.softmax(q @ k.transpose(-1, -2) / self.key_dim ** 0.5, dim=-1)
        return self.o((w @ v).transpose(1, 2).reshape(b, n, -1))


class _PostLNLayer(nn.Module):
    def __init__(self, dim: int, heads: int, key_dim: int, ffn: int, cross: bool):
        super().__init__()
        self.self_attn = _Attention(dim, heads, key_dim)
        self.cross_attn = _Attention(dim, heads, key_dim) if cross else None
        self.ffn = nn.Sequential(nn.Linear(dim, ffn, bias=False), nn.ReLU(), nn.Linear(ffn, dim, bias=False))
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(3 if cross else 2))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norms[0](x + self.self_attn(x, x))
        if self.cross_attn is not None:
            x = self.norms[1](x + self.cross_attn(x, memory))
        return self.norms[-1](x + self.ffn(x))


class _EncoderDecoder(nn.Module):
    def __init__(self, dim: int, heads: int, key_dim: int, ffn: int, layers: int):
        super().__init__()
        self.encoder = nn.ModuleList(_PostLNLayer(dim, heads, key_dim, ffn, False) for _ in range(layers))
        self.decoder = nn.ModuleList(_PostLNLayer(dim, heads, key_dim, ffn, True) for _ in range(layers))
        self.head = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = x
        for layer in self.encoder:
            memory = layer(memory)
        y = x
        for layer in self.decoder:
            y = layer(y, memory)
        return self.head(y)


class _Floor(nn.Module):
    """One engine op (a ReLU) on a tiny tensor: timed in an app, its prediction time is almost all the
    app's own per-prediction floor (marshalling, scheduling), which `snapbench calibrate --app-floor` reads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


FLOOR_INPUT: Shape = (1, 16, 8, 8)


def _synthetic(spec: ModelSpec, shape: Shape | None) -> Network:
    if spec.name == "floor":
        if shape is not None and shape != FLOOR_INPUT:
            raise SnapbenchError(f"synthetic:floor has one input, {'x'.join(map(str, FLOOR_INPUT))}; drop --input")
        return Network(_Floor().eval(), _image_io(FLOOR_INPUT), "synthetic floor (one op)")
    m = re.fullmatch(r"(conv|dense|transformer)((?:-[a-z]\d+)+)", spec.name)
    if not m:
        raise SnapbenchError(f"unknown synthetic model {spec.name!r}; write conv-f128-k3-l6, dense-u128-l6, "
                             "transformer-d512-h6-k64-f1024-l8 or floor")
    kind, args = m.group(1), {a[0]: int(a[1:]) for a in m.group(2).strip("-").split("-")}
    try:
        if kind == "conv":
            shape = _need_shape(spec, shape, None)
            layers: list[nn.Module] = []
            cin = shape[1]
            for _ in range(args["l"]):
                layers += [nn.Conv2d(cin, args["f"], args["k"], padding="same", bias=False), nn.ReLU()]
                cin = args["f"]
            return Network(nn.Sequential(*layers).eval(), _image_io(shape), f"synthetic {spec.name}")
        if kind == "dense":
            shape = _need_shape(spec, shape, None)
            layers, cin = [], shape[-1]
            for _ in range(args["l"]):
                layers += [nn.Linear(cin, args["u"], bias=False), nn.ReLU()]
                cin = args["u"]
            return Network(nn.Sequential(*layers).eval(), _image_io(shape), f"synthetic {spec.name}")
        module = _EncoderDecoder(args["d"], args["h"], args["k"], args["f"], args["l"]).eval()
        return Network(module, _image_io(_need_shape(spec, shape, (1, 10, args["d"]))), f"synthetic {spec.name}")
    except KeyError as exc:
        raise SnapbenchError(f"synthetic model {spec.name!r} lacks -{exc.args[0]}N") from None


BUILDERS: dict[str, Callable[[ModelSpec, Shape | None], Network]] = {
    "timm": _timm, "torchvision": _torchvision, "open_clip": _open_clip, "hf": _hf, "synthetic": _synthetic,
}


def build_network(spec: ModelSpec, input_shape: str | Shape | None = None, *, seed: int = 0) -> Network:
    """The network of `spec` with seeded random weights, and its interface at `input_shape`.

    A name and its options can imply any size (`hf:BertConfig:{"num_hidden_layers":1000000000}`), so the
    network is first built and run on the meta device within the size limits (size_bound.py), and only
    then for real; a builder that cannot run on meta is built for real with every allocation checked first.
    """
    if spec.kind == "package":
        raise SnapbenchError(f"{spec.name} is already a Core ML model; it is priced as it is")
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape

    def build() -> Network:
        return BUILDERS[spec.kind](spec, shape)

    what = spec.text
    activations_checked = False
    with torch.no_grad():
        try:
            probe: Network | None = bounded_build(build, what)
        except SnapbenchError:
            raise
        except Exception:  # it computes while it builds (open_clip copies tensors): build it for real below
            probe = None
        if probe is not None:
            activations_checked = _meta_forward(probe, what)
            del probe
        torch.manual_seed(seed)
        try:
            net = build() if activations_checked else bounded_real_build(build, what)
        except SnapbenchError:
            raise
        except Exception as exc:  # options the library rejects: TypeError, ValueError, RuntimeError, ...
            raise SnapbenchError(f"{what}: the options do not build a network "
                                 f"({type(exc).__name__}: {first_line(exc, default=type(exc).__name__)})") from None
        if not activations_checked:  # one real forward, each op sized on meta before it runs
            try:
                check_activations(lambda: net.module(*example_inputs(net.io)), _at(what, net.io))
            except SnapbenchError:
                raise
            except Exception:  # the network fails at this input on its own: tracing reports that, in context
                pass
    return net


def _at(what: str, io: PackageIO) -> str:
    return f"{what} at input {'x'.join(map(str, io.inputs[0][1]))}"


def _meta_forward(net: Network, what: str) -> bool:
    """The forward at the requested input on meta tensors, refused past the activation limit; False when the
    network cannot run on meta (a data-dependent op), so its activations are checked on the real run."""
    inputs = tuple(torch.empty(s, dtype=torch.int32 if n in net.io.int_inputs else torch.float32, device="meta")
                   for n, s in net.io.inputs)
    try:
        check_activations(lambda: net.module(*inputs), _at(what, net.io))
    except SnapbenchError:
        raise
    except Exception:
        return False
    return True
