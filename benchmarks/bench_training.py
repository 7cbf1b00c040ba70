"""Benchmark: one training epoch, our on-tensor batch slicing against a naive DataLoader.

Same model (Kane MLP, 343 inputs, 4 labels), same optimiser, same loss, batch 128, on the real demo
training split (the embedded giants), in one process. Ours: one `randperm` per epoch and tensor
slicing (what `spectra_ml.training.fit` does). Naive: `DataLoader(TensorDataset(X, Y), batch_size=128,
shuffle=True)`, which indexes and collates sample by sample in Python.

    python benchmarks/bench_training.py [--epochs 3]
"""

import argparse, json, time
from pathlib import Path
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from spectra_ml.core import DEMO_LABELS, library_versions
from spectra_ml.models.kane import HeteroscedasticMLP, heteroscedastic_nll
from spectra_ml.data.samples import load_demo
from spectra_ml.kane.samples import select_giants
from spectra_ml.checkpoint import LabelScaler
from spectra_ml.features import PercentileScaler


def epoch_ours(model, opt, X, Y, bs, gen):
    perm = torch.randperm(len(X), generator=gen)
    for i in range(0, len(X), bs):
        b = perm[i : i + bs]
        mu, lv = model(X[b])
        loss = heteroscedastic_nll(mu, lv, Y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()


def epoch_naive(model, opt, loader):
    for xb, yb in loader:
        mu, lv = model(xb)
        loss = heteroscedastic_nll(mu, lv, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "training.json"))
    a = ap.parse_args()
    meta, flux, _ = load_demo()
    keep, _ = select_giants(meta, DEMO_LABELS)
    X = PercentileScaler().fit(flux[keep]).transform(flux[keep])
    Yr = meta.loc[keep, list(DEMO_LABELS)].to_numpy()
    Y = LabelScaler().fit(Yr).transform(Yr)
    X, Y = torch.as_tensor(X), torch.as_tensor(Y)
    res = {"n_rows": len(X), "batch": 128, "epochs": a.epochs, "threads": torch.get_num_threads()}
    for name in ("ours", "naive_dataloader"):
        torch.manual_seed(0)
        model = HeteroscedasticMLP(X.shape[1], Y.shape[1])
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        gen = torch.Generator().manual_seed(0)
        loader = DataLoader(TensorDataset(X, Y), batch_size=128, shuffle=True)
        times = []
        for _ in range(a.epochs):
            t0 = time.perf_counter()
            epoch_ours(model, opt, X, Y, 128, gen) if name == "ours" else epoch_naive(
                model, opt, loader
            )
            times.append(time.perf_counter() - t0)
        res[f"{name}_epoch_s"] = min(times)
    res["speedup"] = res["naive_dataloader_epoch_s"] / res["ours_epoch_s"]
    res["versions"] = {k: library_versions()[k] for k in ("python", "torch")}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
