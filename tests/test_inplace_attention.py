"""ANE attention rewritten in place (ane_attention.rewrite_transformer's `consume`, unet_chunks.build_chunk):
the rewritten block takes the original's tensors, so a UNet chunk is never built with an attention block's
weights held twice; the values, the PSNR checks and the packages are the copying rewrite's, bit for bit.
Tiny real diffusers modules and real conversions."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from model_refs import SDXL_SHALLOW
from package_ops import chunk_plans
from test_ane_attention import make_inputs, make_transformer

from snapbench.converters import unet_chunks
from snapbench.converters.ane_attention import rewrite_transformer
from snapbench.converters.options import ConvertOptions
from snapbench.converters.unet_chunks import build_chunk
from snapbench.model.units import AttentionUnit


def _storages(module: torch.nn.Module) -> dict[int, int]:
    """{storage address: bytes} of every parameter and buffer."""
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in (*module.parameters(), *module.buffers())}


@pytest.mark.parametrize("impl", ["split_einsum", "split_einsum_v2"])
@pytest.mark.parametrize("linear", [False, True])  # SD-1.x's 1x1-conv projections, SD-2.x / SDXL's Linear ones
def test_consumed_rewrite_takes_the_originals_tensors_and_equals_the_copy(impl, linear):
    original = make_transformer(linear=linear, layers=2)
    twin = copy.deepcopy(original)
    x, context = make_inputs(original)
    with torch.no_grad():
        reference = original(x, encoder_hidden_states=context, return_dict=False)[0]
    before = _storages(original)
    copied = rewrite_transformer(twin, impl, query_chunk_size=24)
    taken = rewrite_transformer(original, impl, query_chunk_size=24, consume=True)
    # not one new storage: every tensor of the rewrite is one of the original's (reshaped views)
    assert set(_storages(taken)) <= set(before)
    assert sum(before[p] for p in _storages(taken)) == sum(before.values())  # ...and all of them are used
    # the copying rewrite allocates its own, and leaves the original alone
    assert not set(_storages(copied)) & set(_storages(twin))
    a, b = copied.state_dict(), taken.state_dict()
    assert a.keys() == b.keys()
    for k in a:  # bit for bit, the scaled query projections included
        assert torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)), k
    with torch.no_grad():
        assert torch.equal(copied(x, context), taken(x, context))
    assert torch.allclose(taken(x, context), reference, atol=1e-4)


def test_a_chunk_built_in_place_never_holds_an_attention_block_twice(monkeypatch):
    """At each rewrite, the rewritten block's tensors are the original's: no second copy exists at any time."""
    opts = ConvertOptions(mode="deploy", latent=8, tokens=4, chunks=2, attention="split_einsum_v2")
    source, meta, blocks, plans = chunk_plans("sdxl-tiny", opts)
    real = unet_chunks.checked_rewrite
    seen: list[tuple[int, int, int]] = []  # (original's bytes, rewrite's bytes, bytes of the rewrite not shared)

    def watched(original, rewrite, hidden, context, seed):
        before = _storages(original)
        rewritten, db = real(original, rewrite, hidden, context, seed)
        after = _storages(rewritten)
        seen.append((sum(before.values()), sum(after.values()),
                     sum(n for p, n in after.items() if p not in before)))
        return rewritten, db

    monkeypatch.setattr(unet_chunks, "checked_rewrite", watched)
    built = [build_chunk(meta, blocks, meta.closes_skip, p, source, opts.attention, opts.seed) for p in plans]
    attention = sum(1 for p in plans for b in blocks[p.start:p.end]
                    if isinstance(b.unit, AttentionUnit) and b.unit.has_compute)
    assert attention > 0 and len(seen) == attention
    assert all(new == 0 and kept == held for held, kept, new in seen), seen
    assert all(db > 35 for c in built for db in c.psnr_db.values())

    # the copying rewrite (as before) did hold both: every byte of the rewrite was new
    seen.clear()
    for p in plans:
        build_chunk(meta, blocks, meta.closes_skip, p, source, opts.attention, opts.seed, in_place=False)
    assert all(new == kept == held for held, kept, new in seen), seen


def _files(dest: Path) -> dict[str, bytes]:
    return {f.relative_to(dest).as_posix(): f.read_bytes() for f in sorted(dest.rglob("*"))
            if f.is_file() and f.name != "Manifest.json"}  # (item ids in it are random)


@pytest.mark.parametrize("ref, index", [
    ("sd15-tiny", 0),
    pytest.param(SDXL_SHALLOW, 1, marks=pytest.mark.slow, id="sdxl-shallow"),  # deep blocks, text_time inputs
])
def test_in_place_chunk_is_the_copying_chunk_byte_for_byte(tmp_path, ref, index):
    from snapbench.converters.convert_package import convert_module, example_inputs
    from snapbench.converters.unet_chunks import at_batch_one

    opts = ConvertOptions(mode="deploy", latent=8, tokens=4, chunks=2, attention="split_einsum_v2")
    source, meta, blocks, plans = chunk_plans(ref, opts)
    plan = plans[index]
    packages, checks = [], []
    for in_place in (False, True):
        chunk = build_chunk(meta, blocks, meta.closes_skip, plan, source, opts.attention, opts.seed,
                            in_place=in_place)
        checks.append(chunk.psnr_db)
        dest = tmp_path / str(in_place) / f"{plan.name}.mlpackage"
        convert_module(chunk.module, plan.io, opts, dest, metadata={}, description="chunk",
                       inputs=example_inputs(at_batch_one(plan.io)), release=True)
        packages.append(_files(dest))
    assert checks[0] and checks[0] == checks[1]  # the same PSNR, to the last bit
    assert packages[0] == packages[1]


def test_release_freed_memory_finds_glibc_malloc_trim():
    import sys

    from snapbench.converters.runtime import _malloc_trim, release_freed_memory

    release_freed_memory()  # never raises, whatever the platform
    if sys.platform.startswith("linux"):
        import platform

        if platform.libc_ver()[0] == "glibc":
            assert _malloc_trim() is not None
    else:
        assert _malloc_trim() is None
