"""SnapGen-style block variants (arXiv 2412.09619): cheaper versions of a ResNet or transformer block.

A variant is built from a diffusers block and keeps its call convention, so the elastic UNet, block
cutting and conversion run it like the original:

- `separable=r` (ResNet): each 3x3 convolution becomes an expanded depthwise-separable one, 1x1 expand
  (C_in -> r*C_in, no bias) -> 3x3 depthwise (with bias) -> 1x1 project (r*C_in -> C_out). Nothing
  non-linear sits between the three, so the stack is a factorised 3x3 convolution: `dense_weight()`
  gives the plain convolution it equals, which is how it is tested against diffusers' ResnetBlock2D. The
  expand has no bias because the depthwise convolution zero-pads what the expand produced; a bias there
  would make borders differ from the dense convolution.
- `kv_heads=k` (attention): k key/value heads shared by groups of query heads (k = 1: multi-query, else
  grouped-query), as diffusers' `Attention(kv_heads=k)` lays out the projections.
- `ff_mult=m` (transformer): the feed-forward's inner width is m x the channels (diffusers: 4).
- `self_attention=False` (transformer): blocks of cross-attention and feed-forward only.

Weights of a variant start from the original's where shapes allow (the first m*C feed-forward units; key
and value heads mean-pooled per group, as grouped-query uptraining does); a separable convolution has no
exact counterpart in a dense one (fewer parameters) and starts from the best truncation of the dense
kernel's per-tap singular terms (`ExpandedSeparableConv.init_from_dense`), not from fresh noise.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from snapbench.errors import SnapbenchError
from snapbench.specs.variants import Variant

# -- ResNet: expanded depthwise-separable convolutions -------------------------------------------------


class ExpandedSeparableConv(nn.Module):
    """1x1 expand (no bias) -> kxk depthwise -> 1x1 project: a factorised stand-in for a kxk Conv2d."""

    def __init__(self, c_in: int, c_out: int, ratio: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        hidden = c_in * ratio
        self.ratio = ratio
        self.expand = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.depthwise = nn.Conv2d(hidden, hidden, kernel_size, padding=padding, groups=hidden)
        self.project = nn.Conv2d(hidden, c_out, 1)
        self.in_channels, self.out_channels = c_in, c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.depthwise(self.expand(x)))

    def dense_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (weight, bias) of the one Conv2d this stack equals."""
        w1 = self.expand.weight[:, :, 0, 0]  # [E, C_in]
        wd = self.depthwise.weight[:, 0]  # [E, k, k]
        w2 = self.project.weight[:, :, 0, 0]  # [C_out, E]
        weight = torch.einsum("oe,ekl,ei->oikl", w2, wd, w1)
        bias = w2 @ self.depthwise.bias + self.project.bias
        return weight, bias

    @torch.no_grad()
    def init_from_dense(self, conv: nn.Conv2d) -> ExpandedSeparableConv:
        """Start as close to `conv` as the factorisation allows (weight sharing where shapes do not match).

        A kxk convolution is a sum over its k*k taps of C_out x C_in matrices; each hidden channel here is one
        rank-1 term of one tap (expand row = right singular vector, one-hot depthwise tap, project column =
        left singular vector, each scaled by sqrt(singular value)). With E = r*C_in hidden channels the E
        largest terms over all taps are kept: exact when E >= k*k*C_in, the best such truncation otherwise."""
        w = conv.weight.float()  # [C_out, C_in, k, k]
        k = w.shape[-1]
        taps = w.permute(2, 3, 0, 1).reshape(k * k, w.shape[0], w.shape[1])  # [k*k, C_out, C_in]
        u, sv, vh = torch.linalg.svd(taps, full_matrices=False)  # [T, C_out, R], [T, R], [T, R, C_in]
        hidden = self.expand.out_channels
        order = torch.argsort(sv.flatten(), descending=True)[:hidden]
        tap, j = order // sv.shape[1], order % sv.shape[1]
        root = sv[tap, j].sqrt()
        self.expand.weight.zero_()
        self.depthwise.weight.zero_()
        self.project.weight.zero_()
        n = len(order)
        self.expand.weight[:n, :, 0, 0] = (vh[tap, j, :] * root[:, None]).to(self.expand.weight.dtype)
        self.project.weight[:, :n, 0, 0] = (u[tap, :, j] * root[:, None]).T.to(self.project.weight.dtype)
        self.depthwise.weight[torch.arange(n), 0, tap // k, tap % k] = 1.0
        self.depthwise.bias.zero_()
        if conv.bias is not None:
            self.project.bias.copy_(conv.bias)
        else:
            self.project.bias.zero_()
        return self


def separable_resnet(resnet: nn.Module, ratio: int) -> nn.Module:
    """A copy of a diffusers ResnetBlock2D whose two 3x3 convolutions are expanded separable ones.

    Norms, time projection and shortcut keep the original's weights; ResnetBlock2D.forward is unchanged
    (it calls conv1 and conv2 as modules)."""
    new = copy.deepcopy(resnet)
    for name in ("conv1", "conv2"):
        conv = getattr(resnet, name)
        sep = ExpandedSeparableConv(conv.in_channels, conv.out_channels, ratio, conv.kernel_size[0], conv.padding[0])
        sep = sep.to(device=conv.weight.device, dtype=conv.weight.dtype)
        if conv.weight.device.type != "meta":
            sep.init_from_dense(conv)
        setattr(new, name, sep)
    return new


def separable_ratio(resnet: nn.Module) -> int | None:
    conv = getattr(resnet, "conv1", None)
    return conv.ratio if isinstance(conv, ExpandedSeparableConv) else None


# -- attention: fewer key/value heads -------------------------------------------------------------------


class GroupedQueryProcessor:
    """Attention with fewer key/value heads than query heads, for diffusers `Attention(kv_heads=k)`.

    The query heads of one group are folded onto the sequence axis, [B, k, g*S, d] against keys
    [B, k, L, d]: the same maths as repeating each key/value head g times, without materialising the
    repeats (what makes multi-query attention cheaper to read on the Neural Engine).
    """

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        if attention_mask is not None:
            raise SnapbenchError("grouped-query attention here takes no attention mask (SD-style UNets pass none)")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, s, _c = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        d = q.shape[-1] // attn.heads
        kv = k.shape[-1] // d
        g = attn.heads // kv
        q = q.view(b, s, kv, g, d).permute(0, 2, 3, 1, 4).reshape(b, kv, g * s, d)  # [B, k, g*S, d]
        k = k.view(b, -1, kv, d).transpose(1, 2)  # [B, k, L, d]
        v = v.view(b, -1, kv, d).transpose(1, 2)  # [B, k, L, d]
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)  # [B, k, g*S, d]
        out = out.reshape(b, kv, g, s, d).permute(0, 3, 1, 2, 4).reshape(b, s, attn.heads * d)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


def kv_heads_of(attn: nn.Module) -> int:
    return attn.inner_kv_dim // (attn.inner_dim // attn.heads)


def grouped_query_attention(attn: nn.Module, kv_heads: int, where: str) -> nn.Module:
    """A diffusers Attention like `attn` with `kv_heads` key/value heads; keys and values start as the
    mean of the original's heads in each group."""
    from diffusers.models.attention_processor import Attention

    heads = attn.heads
    if heads % kv_heads:
        raise SnapbenchError(f"{where}: kv_heads={kv_heads} does not divide the block's {heads} heads; "
                             f"use a divisor of {heads} (1 = multi-query)")
    d = attn.inner_dim // heads
    new = Attention(query_dim=attn.query_dim, cross_attention_dim=attn.cross_attention_dim, heads=heads, dim_head=d,
                    kv_heads=kv_heads, bias=attn.to_q.bias is not None, upcast_attention=attn.upcast_attention,
                    out_bias=attn.to_out[0].bias is not None)
    new = new.to(device=attn.to_q.weight.device, dtype=attn.to_q.weight.dtype)
    new.set_processor(GroupedQueryProcessor())
    if attn.to_q.weight.device.type == "meta":
        return new
    with torch.no_grad():
        new.to_q.load_state_dict(attn.to_q.state_dict())
        new.to_out.load_state_dict(attn.to_out.state_dict())
        for name in ("to_k", "to_v"):
            w = getattr(attn, name).weight  # [heads*d, D]
            pooled = w.view(kv_heads, heads // kv_heads, d, -1).mean(dim=1).reshape(kv_heads * d, -1)
            getattr(new, name).weight.copy_(pooled)
            bias = getattr(attn, name).bias  # PixArt's attention has biases (SD's UNets do not)
            if bias is not None:
                getattr(new, name).bias.copy_(bias.view(kv_heads, heads // kv_heads, d).mean(dim=1).reshape(-1))
    return new


# -- transformer: feed-forward ratio, no self-attention --------------------------------------------------


def narrower_feed_forward(ff: nn.Module, dim: int, mult: int) -> nn.Module:
    """diffusers FeedForward(dim, mult) keeping the original's first mult*dim inner units."""
    from diffusers.models.attention import FeedForward

    act = ff.net[0]
    # GEGLU (SD's UNets), or GELU exact / tanh-approximate (PixArt's "gelu-approximate"), kept as it was
    activation = ("geglu" if type(act).__name__ == "GEGLU" else
                  "gelu-approximate" if getattr(act, "approximate", "none") == "tanh" else "gelu")
    new = FeedForward(dim, mult=mult, activation_fn=activation, bias=act.proj.bias is not None)
    new = new.to(device=act.proj.weight.device, dtype=act.proj.weight.dtype)
    if act.proj.weight.device.type == "meta":
        return new
    inner = new.net[0].proj.out_features // (2 if activation == "geglu" else 1)
    old_inner = act.proj.out_features // (2 if activation == "geglu" else 1)
    keep = min(inner, old_inner)
    with torch.no_grad():
        halves = 2 if activation == "geglu" else 1
        for h in range(halves):  # GEGLU: value half then gate half
            new.net[0].proj.weight[h * inner:h * inner + keep] = act.proj.weight[h * old_inner:h * old_inner + keep]
            if act.proj.bias is not None:
                new.net[0].proj.bias[h * inner:h * inner + keep] = act.proj.bias[h * old_inner:h * old_inner + keep]
        new.net[2].weight.zero_()
        new.net[2].weight[:, :keep] = ff.net[2].weight[:, :keep]
        new.net[2].bias.copy_(ff.net[2].bias)
    return new


class CrossOnlyTransformerBlock(nn.Module):
    """diffusers BasicTransformerBlock without its self-attention: cross-attention, then feed-forward.

    Called like BasicTransformerBlock (Transformer2DModel passes the same keywords)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        if block.attn2 is None:
            raise SnapbenchError("a transformer block without cross-attention cannot drop its self-attention")
        self.norm2, self.attn2, self.norm3, self.ff = block.norm2, block.attn2, block.norm3, block.ff
        # what readers of a BasicTransformerBlock look at (the Neural Engine rewrite, signatures)
        self.norm1 = self.attn1 = self.pos_embed = None
        self.norm_type, self.activation_fn = block.norm_type, block.activation_fn
        self.only_cross_attention = self.double_self_attention = False

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        hidden_states = self.attn2(self.norm2(hidden_states), encoder_hidden_states=encoder_hidden_states) + hidden_states
        return self.ff(self.norm3(hidden_states)) + hidden_states


def transformer_variant(transformer: nn.Module, v: Variant, where: str) -> nn.Module:
    """A copy of a diffusers Transformer2DModel with every one of its blocks made the variant `v`."""
    new = copy.deepcopy(transformer)
    blocks = []
    for block in new.transformer_blocks:
        if v.kv_heads is not None:
            block.attn1 = grouped_query_attention(block.attn1, v.kv_heads, where)
            if block.attn2 is not None:
                block.attn2 = grouped_query_attention(block.attn2, v.kv_heads, where)
        if v.ff_mult is not None:
            block.ff = narrower_feed_forward(block.ff, block.norm3.normalized_shape[0], v.ff_mult)
        blocks.append(block if v.self_attention else CrossOnlyTransformerBlock(block))
    new.transformer_blocks = nn.ModuleList(blocks)
    return new


def share_parameters(new: nn.Module, like: nn.Module) -> list[str]:
    """Make `new` hold `like`'s parameter objects wherever both have a parameter of that name and shape
    (the two then train one tensor); returns the names shared."""
    have = dict(like.named_parameters())
    shared = []
    for name, p in list(new.named_parameters()):
        q = have.get(name)
        if q is not None and q.shape == p.shape:
            parent, _, leaf = name.rpartition(".")
            setattr(new.get_submodule(parent) if parent else new, leaf, q)
            shared.append(name)
    return shared


def resnet_variant(resnet: nn.Module, v: Variant) -> nn.Module:
    return separable_resnet(resnet, v.separable) if v.separable is not None else resnet
