"""Benchmark `snapbench convert` against the plain whole-UNet conversion a user does today.

    .venv/bin/python benchmarks/bench_convert.py [--model sd15] [--latent 64] [--batch 2] [--work DIR]
    .venv/bin/python benchmarks/bench_convert.py --model sdxl --latent 128 --skip-deploy   # needs > 23 GB for (a)

Side by side, each variant in its own process (so memory figures are its own):
  (a) naive: the whole diffusers UNet through torch.jit.trace (defaults) + ct.convert (fp16, iOS16) + save
  (b) snapbench convert, profile mode, cold (default --jobs: the cores available)
  (c) snapbench convert --mode deploy, cold
  (d) (b) again, warm: nothing to convert
Wall time, and peak memory two ways: the sum of RSS over the process tree (polled every 0.1 s; what the
machine must hold) and the largest single process (getrusage's ru_maxrss of the children).
Takes many minutes on a 2-core machine; other users of the CPU slow every variant.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from measure import ratio_table, run  # benchmarks/measure.py: this script's folder is first on sys.path

PY = sys.executable
SNAPBENCH = str(Path(PY).with_name("snapbench"))

NAIVE = r'''
import sys
import snapbench  # first: lets torchvision (which diffusers imports) load beside a CPU-only torch
import torch, coremltools as ct
from diffusers import UNet2DConditionModel
from snapbench.backbones import resolve_model
from snapbench.specs.layout import TEXT_TIME_IDS, text_embeds_dim
model, latent, batch, tokens, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
cfg = {k: v for k, v in resolve_model(model).spec.base_config.items() if not k.startswith("_")}
torch.manual_seed(0)
unet = UNet2DConditionModel(**cfg).eval()

class Wrapper(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet
    def forward(self, sample, timestep, context, *added):
        # SDXL-class UNets: the pooled text embedding and the size / crop ids, as diffusers takes them
        kw = {"added_cond_kwargs": dict(zip(("text_embeds", "time_ids"), added))} if added else {}
        return self.unet(sample, timestep, encoder_hidden_states=context, return_dict=False, **kw)[0]

ex = (torch.randn(batch, cfg["in_channels"], latent, latent), torch.full((batch,), 981.0),
      torch.randn(batch, tokens, cfg["cross_attention_dim"]))
pooled = text_embeds_dim(cfg)
if pooled is not None:
    ex += (torch.randn(batch, pooled), torch.randn(batch, TEXT_TIME_IDS))
with torch.no_grad():
    traced = torch.jit.trace(Wrapper(unet), ex)
names = ("sample", "timestep", "context", "text_embeds", "time_ids")
ml = ct.convert(traced, convert_to="mlprogram",
                inputs=[ct.TensorType(name=n, shape=t.shape) for n, t in zip(names, ex)],
                compute_precision=ct.precision.FLOAT16, minimum_deployment_target=ct.target.iOS16)
ml.save(out)
'''


def max_process(_label: str, r: dict) -> str:
    return f"{r['max_process_rss'] / 1e9:.2f}" if r.get("max_process_rss") else "<= above"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed after)")
    ap.add_argument("--json-out", default=None, help="also write the figures as JSON here")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-deploy", action="store_true",
                    help="leave out (c): deploy mode holds the whole UNet's weights (SDXL: 10.3 GB in fp32)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_convert."))
    shapes = ["--latent", str(a.latent), "--batch", str(a.batch), "--tokens", str(a.tokens)]
    rows = []
    try:
        if not a.skip_naive:
            print("(a) naive whole-UNet trace + convert ...", file=sys.stderr, flush=True)
            rows.append(("(a) whole UNet, plain trace + ct.convert",
                         run([PY, "-c", NAIVE, a.model, str(a.latent), str(a.batch), str(a.tokens),
                              str(work / "naive.mlpackage")])))
        variants = [("(b) snapbench convert, profile, cold", "profile", []),
                    ("(c) snapbench convert, deploy, cold", "deploy", ["--mode", "deploy"]),
                    ("(d) snapbench convert, profile, warm", "profile", [])]
        for label, out, extra in [v for v in variants if not (a.skip_deploy and v[1] == "deploy")]:
            print(f"{label} ...", file=sys.stderr, flush=True)
            rows.append((label, run([SNAPBENCH, "convert", "--model", a.model, *shapes, "--out", str(work / out),
                                     "--json", *extra])))
            if out == "profile" and "cold" in label:
                m = json.loads((work / out / "manifest.json").read_text())
                rows[-1][1]["packages"] = m["packages"]
                rows[-1][1]["blocks"] = len(m["blocks"])
        cpus = len(os.sched_getaffinity(0))
        print(f"\n{a.model}, latent {a.latent}x{a.latent}, batch {a.batch}, {a.tokens} tokens; {cpus} cores; "
              f"load average at the end {os.getloadavg()[0]:.1f}")
        ratio_table(rows, baseline=not a.skip_naive, extra={"max proc GB": max_process})
        if a.json_out:
            Path(a.json_out).write_text(json.dumps({"model": a.model, "rows": rows}, indent=2))
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
