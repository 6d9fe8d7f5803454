import pytest
import torch

from snapbench.backbones import resolve_model
from snapbench.errors import SnapbenchError
from snapbench.model.loading import build_unet, save_elastic
from snapbench.specs.arch_spec import BlockChoice
from snapbench.specs.presets import load_preset


def test_full_spec_equals_diffusers_forward(tiny_inputs):
    model = build_unet(resolve_model("sd15-tiny")).eval()
    sample, t, ctx = tiny_inputs
    with torch.no_grad():
        ours = model(sample, t, ctx)
        theirs = model.base(sample, t, ctx).sample
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_sd21_style_linear_projection_equals_diffusers(tiny_inputs):
    spec = load_preset("sd15-tiny")
    cfg = dict(spec.base_config, use_linear_projection=True, attention_head_dim=[1, 2, 4, 4])
    from snapbench.model.loading import ModelSource
    from snapbench.specs.arch_spec import full_spec

    model = build_unet(ModelSource("x", full_spec(cfg, "x"))).eval()
    sample, t, ctx = tiny_inputs
    with torch.no_grad():
        torch.testing.assert_close(model(sample, t, ctx), model.base(sample, t, ctx).sample, atol=1e-5, rtol=0)


def test_snapfusion_spec_runs_with_documented_shapes(tiny_inputs):
    model = build_unet(resolve_model("snapfusion-tiny")).eval()
    sample, t, ctx = tiny_inputs
    record = []
    with torch.no_grad():
        out = model(sample, t, ctx, record=record)
    assert out.shape == sample.shape
    by_id = {u.block_id: (u, args, o) for u, args, o in record}
    # a removed up-stage ResNet keeps only its shortcut projection: cat(hidden, skip) -> C_out
    unit, args, o = by_id["RB[Up-1, 3]"]
    assert unit.removed and unit.resnet.conv_shortcut is not None
    assert args[0].shape[1] + args[1].shape[1] == unit.resnet.conv_shortcut.in_channels
    assert o.shape[1] == unit.resnet.conv_shortcut.out_channels
    # a removed CA is the identity
    unit, args, o = by_id["CA[Down-1, 1]"]
    assert unit.removed and torch.equal(args[0], o)
    # copies follow their original and keep its shape
    ids = [u.block_id for u, _, _ in record]
    i = ids.index("CA[Up-1, 1]")
    assert ids[i + 1] == "CA[Up-1, 1] (copy 1)"
    assert by_id["CA[Up-1, 1] (copy 1)"][2].shape == by_id["CA[Up-1, 1]"][2].shape


def test_copy_is_a_weight_copy_not_shared(tiny_inputs):
    model = build_unet(resolve_model("snapfusion-tiny"))
    orig = model.unit("CA[Up-1, 1]").transformer
    dup = model.unit("CA[Up-1, 1] (copy 1)").transformer
    for (n, a), (_, b) in zip(orig.named_parameters(), dup.named_parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), n


def test_resnet_copy_of_channel_changing_block_runs(tiny_inputs):
    spec = load_preset("sd15-tiny").with_choices("x", {("Up-2", "RB1"): BlockChoice("RB1", copies=1),
                                                      ("Down-2", "RB1"): BlockChoice("RB1", copies=1)})
    from snapbench.model.loading import ModelSource

    model = build_unet(ModelSource("x", spec)).eval()
    sample, t, ctx = tiny_inputs
    with torch.no_grad():
        assert model(sample, t, ctx).shape == sample.shape
    dup = model.unit("RB[Up-2, 1] (copy 1)").resnet
    assert dup.conv_shortcut is None and dup.conv1.in_channels == dup.conv1.out_channels


def test_disabled_mask_equals_removal_spec(tiny_inputs):
    full = build_unet(resolve_model("sd15-tiny")).eval()
    spec = full.spec.with_choices("r", {("Up-1", "RB2"): BlockChoice("RB2", keep=False),
                                        ("Mid", "CA1"): BlockChoice("CA1", keep=False)})
    from snapbench.model.loading import ModelSource

    removed = build_unet(ModelSource("r", spec)).eval()  # same seed -> same weights
    sample, t, ctx = tiny_inputs
    with torch.no_grad():
        a = full(sample, t, ctx, disabled={"RB[Up-1, 2]", "mid_ca1"})
        b = removed(sample, t, ctx)
        c = full(sample, t, ctx)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_stochastic_skipping_only_in_training(tiny_inputs):
    model = build_unet(resolve_model("sd15-tiny"))
    model.set_skip_probabilities(ca=0.5, rb=0.5)
    sample, t, ctx = tiny_inputs
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(sample, t, ctx), model(sample, t, ctx))
    model.train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        outs = [model(sample, t, ctx, generator=g) for _ in range(4)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    with pytest.raises(SnapbenchError):
        model.set_skip_probabilities(ca=1.0, rb=0.1)


def test_skip_frequency_follows_probability():
    model = build_unet(resolve_model("sd15-tiny"), device="meta")
    model.set_skip_probabilities(ca=0.25, rb=0.0)
    model.train()
    unit = model.unit("CA[Up-2, 1]")
    g = torch.Generator().manual_seed(0)
    active = sum(model._active(unit, (), g) for _ in range(4000))
    assert abs(active / 4000 - 0.75) < 0.03
    rb = model.unit("RB[Up-2, 1]")
    assert all(model._active(rb, (), g) for _ in range(100))


def test_checkpoint_folder_loads_weights(tiny_checkpoint, tiny_inputs):
    folder, unet = tiny_checkpoint
    model = build_unet(resolve_model(str(folder))).eval()
    sample, t, ctx = tiny_inputs
    with torch.no_grad():
        torch.testing.assert_close(model(sample, t, ctx), unet.eval()(sample, t, ctx).sample, atol=1e-5, rtol=0)


def test_checkpoint_into_derived_spec(tiny_checkpoint, tiny_inputs):
    folder, unet = tiny_checkpoint
    src = resolve_model("snapfusion-tiny", weights=str(folder))
    model = build_unet(src).eval()
    ref = unet.state_dict()["up_blocks.1.attentions.0.proj_in.weight"]
    assert torch.equal(model.unit("CA[Up-1, 1] (copy 1)").transformer.proj_in.weight, ref)


def test_save_elastic_round_trip(tmp_path, tiny_inputs):
    model = build_unet(resolve_model("snapfusion-tiny")).eval()
    with torch.no_grad():
        for p in model.copies.parameters():
            p.add_(0.01)  # copies diverge from their originals after fine-tuning
    save_elastic(model, tmp_path / "saved")
    again = build_unet(resolve_model(str(tmp_path / "saved"))).eval()
    sample, t, ctx = tiny_inputs
    with torch.no_grad():
        torch.testing.assert_close(model(sample, t, ctx), again(sample, t, ctx))
    assert not list(tmp_path.glob(".*partial"))


def test_latent_not_divisible_is_explained():
    model = build_unet(resolve_model("sd15-tiny")).eval()
    with pytest.raises(SnapbenchError, match="multiple of 8"):
        model(torch.randn(1, 4, 12, 12), torch.tensor([1.0]), torch.randn(1, 5, 16))


def test_candidates_batched_per_row_equal_each_candidate_alone(tiny_inputs):
    """Evolution batches candidates through the model holding all their blocks (PerRow): each row gives
    what its own architecture gives alone, removals, a restored block and an added copy alike."""
    from snapbench.evolution.batching import union_spec
    from snapbench.model.elastic_unet import PerRow
    from snapbench.training.checkpoints import derive

    base = build_unet(resolve_model("sd15-tiny")).eval()
    parent = base.spec.with_choices("p", {("Mid", "CA1"): BlockChoice("CA1", keep=False)})
    cands = [parent,
             parent.with_choices("a", {("Up-1", "RB2"): BlockChoice("RB2", keep=False)}),  # shortcut left
             parent.with_choices("b", {("Mid", "CA1"): BlockChoice("CA1")}),  # restored
             parent.with_choices("c", {("Up-1", "CA1"): BlockChoice("CA1", copies=1)})]  # copied
    union, off = union_spec(cands)
    assert off[0] == {"CA[Mid, 1]", "CA[Up-1, 1] (copy 1)"} and off[2] == {"CA[Up-1, 1] (copy 1)"}
    sample, t, ctx = tiny_inputs
    rows = [(c, r) for c in range(len(cands)) for r in range(len(sample))]
    x = torch.stack([sample[r] for _, r in rows])
    with torch.no_grad():
        batched = derive(base, union)(x, t[0], torch.stack([ctx[r] for _, r in rows]),
                                      disabled=PerRow(tuple(off[c] for c, _ in rows)))
        for k, (c, r) in enumerate(rows):
            alone = derive(base, cands[c])(sample[r:r + 1], t[0], ctx[r:r + 1])
            torch.testing.assert_close(batched[k:k + 1], alone, atol=1e-5, rtol=0)
    assert not torch.allclose(batched[0], batched[len(sample)])  # the candidates do differ
    with pytest.raises(SnapbenchError, match="rows of disabled blocks"):
        base(sample, t, ctx, disabled=PerRow((frozenset(),)))
