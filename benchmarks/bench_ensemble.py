"""Benchmark: Guiglion's 28-member ensemble trained as one batched model, against the member loop and
against the roofline of the same matrix products.

Real demo training split (the embedded giants; minmax-scaled XP flux + G, BP, RP, as guiglion_cnn's
registry entry), Guiglion §3's re-splits (7 states x 4 seeds, each member fits on its 75%), the same
initial weights, batch 128, the same number of epochs for every variant (early stopping off, so each
does the same work), in one process:

- `loop`: `spectra_ml.training.fit` member after member (what `ensemble_training="loop"` does);
- `batched`: `spectra_ml.training.fit_members_batched` (the default): stacked parameters, one vmapped
  forward and backward pass and one stacked Adam step for all members;
- `roofline`: only the matrix products of those steps, as batched matmuls of the stacked shapes
  (forward, and the weight and input gradients autograd computes), no activations, loss or optimiser.

It also compares each member's loss on its own 25% between loop and batched (they follow the same
trajectory up to float rounding).

    python benchmarks/bench_ensemble.py [--epochs 2] [--members 28] [--repeats 2]
"""

import argparse, copy, json, time
from pathlib import Path

import numpy as np
import torch

from spectra_ml.checkpoint import LabelScaler, TrainConfig
from spectra_ml.core import DEMO_LABELS, library_versions, set_seed
from spectra_ml.models.registry import build_model
from spectra_ml.kane.samples import build_demo_sample
from spectra_ml.features import model_inputs
from spectra_ml.training import fit, fit_members_batched, member_splits
from spectra_ml.features import SCALERS


def roofline(
    members, n_fit: int, n_stop: int, batch: int, epochs: int, eval_rows: int = 2048
) -> float:
    """Seconds of the batched matmuls alone that the same epochs need: per training step forward, dW, and dX
    where autograd needs it; per epoch the forward of the stop rows (each member's own 25%)."""
    M = len(members)
    lins = [m for m in members[0].modules() if isinstance(m, torch.nn.Linear)]
    first = {id(members[0].xp[0]), id(members[0].phot[0]) if members[0].phot is not None else None}
    mats = []
    for lin in lins:
        i, o = lin.in_features, lin.out_features
        mats.append(
            (
                torch.randn(M, batch, i),
                torch.randn(M, i, o),
                torch.randn(M, batch, o),
                id(lin) in first,
            )
        )
    evals = [
        (torch.randn(M, eval_rows, lin.in_features), w) for lin, (_, w, _, _) in zip(lins, mats)
    ]
    t0 = time.perf_counter()
    for _ in range(epochs):
        for _ in range(-(-n_fit // batch)):
            for x, w, g, is_first in mats:
                torch.bmm(x, w)  # forward
                torch.bmm(x.transpose(1, 2), g)  # dW
                if not is_first:
                    torch.bmm(g, w.transpose(1, 2))  # dX
        for _ in range(n_stop // eval_rows):
            for x, w in evals:
                torch.bmm(x, w)
        for x, w in evals:
            torch.bmm(x[:, : n_stop % eval_rows], w)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--members", type=int, default=28)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs per variant")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ensemble.json"))
    a = ap.parse_args()
    labels = list(DEMO_LABELS)
    s = build_demo_sample(labels)[0]
    tr = s[s["split"] == "train"]
    X = model_inputs(tr, ["g", "bp", "rp"])
    X = SCALERS["minmax"]().fit(X).transform(X).astype(np.float32)
    Yr = tr[labels].to_numpy(float)
    Y = LabelScaler().fit(Yr).transform(Yr).astype(np.float32)
    cfg = TrainConfig.for_model("guiglion_cnn", labels, X.shape[1])
    cfg.options["n_phot"] = 3
    cfg.max_epochs, cfg.early_stopping = a.epochs, False
    set_seed(cfg.seed)
    ens = build_model(cfg.model_config())
    members = list(ens.members)[: a.members]
    n_states = -(-len(members) // ens.n_seeds)
    sp_all = member_splits(len(X), n_states, ens.member_train_fraction, cfg.seed)
    who = [(k, m) for k in range(n_states) for m in range(ens.n_seeds)][: len(members)]
    splits = [sp_all[k] for k, _ in who]
    seeds = [cfg.seed + m for _, m in who]
    res = {
        "n_train_rows": len(X),
        "n_fit_rows_per_member": len(splits[0][0]),
        "members": len(members),
        "epochs": a.epochs,
        "repeats (best of)": a.repeats,
        "batch": cfg.batch_size,
        "threads": torch.get_num_threads(),
        "versions": {k: v for k, v in library_versions().items() if k in ("torch", "numpy")},
    }

    def loop():
        out = []
        for j, mem in enumerate(copy.deepcopy(members)):
            c = copy.copy(cfg)
            c.seed = seeds[j]
            f, st = splits[j]
            out.append(fit(X[f], Y[f], X[st], Y[st], c, False, model=mem)[1])
        return out

    def batched():
        return fit_members_batched(copy.deepcopy(members), X, Y, splits, seeds, cfg, progress=False)

    warm = copy.copy(cfg)
    warm.max_epochs = 1
    fit_members_batched(copy.deepcopy(members[:2]), X, Y, splits[:2], seeds[:2], warm, False)
    out = {}
    for name, fn in (("loop", loop), ("batched", batched)):
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            out[name] = fn()
            times.append(time.perf_counter() - t0)
        res[f"{name}_s"] = min(times)
    loop_hist, hist = out["loop"], out["batched"]
    n_fit, n_stop = len(splits[0][0]), len(splits[0][1])
    res["roofline_s"] = min(
        roofline(members, n_fit, n_stop, cfg.batch_size, a.epochs) for _ in range(a.repeats)
    )
    res["speedup_vs_loop"] = res["loop_s"] / res["batched_s"]
    res["fraction_of_roofline"] = res["roofline_s"] / res["batched_s"]
    lv = np.array([h[-1]["val_loss"] for h in loop_hist])
    bv = np.array([h[-1]["val_loss"] for h in hist])
    d = bv - lv
    res["own_stop_loss"] = {
        "loop_mean": float(lv.mean()),
        "batched_mean": float(bv.mean()),
        "max_abs_rel_diff": float(np.max(np.abs(d) / lv)),
        "paired_mean_diff": float(d.mean()),
        "paired_diff_std": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
    }
    print(json.dumps(res, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
