"""Diffusion transformers (DiTs): SD3-class MMDiT, PixArt-Sigma and Sana, block by block.

A DiT is a patch embedding, a timestep (and pooled-text) embedding, a caption projection, a stack of
near-identical transformer blocks and a final norm + projection. Each of those is a block here, with
its own signature, package and latency row, so the stack's blocks (most of them one signature) convert
to a handful of packages.

    family.py     the diffusers classes snapbench handles, their facts and the options it refuses
    spec.py       the DiT spec (diffusers config + provenance) and the shipped presets
    source.py     `--model` for DiTs: preset, spec .json, local checkpoint folder; building on meta / CPU
    units.py      the blocks as modules with plain tensor inputs and outputs
    cut.py        cutting a DiT into blocks and stages: shapes, params, MACs, signatures
"""
