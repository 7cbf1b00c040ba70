__version__ = "0.1.0"
__doc__ = """spectra_ml: Gaia XP spectra -> stellar labels with σ.

The public API is short:

- `load_model(path, **options)`: a checkpoint folder as a `Predictor` (options: n_passes, seed,
  batch_size, shared_masks, calibration, label_ranges, ood_span, device, progress).
- `Predictor`: a loaded checkpoint with its prediction options; `Predictor.predict(X, ids, X_var)`
  gives μ, σ (its parts, calibrated σ) and the flags per star.
- `read_xp(path)`: an archive XP continuous file (CSV, VOTable, FITS) as a dictionary of arrays.
- `label_stars(path_or_table, model=None)`: labels with σ and flags for your own stars, one row per star, with the
  default released model (release.DEFAULT_MODEL, "giants-xp") or another (a released name or a checkpoint
  folder): `spectra_ml predict --single-file` from Python (same conversion, same Predictor), as a DataFrame
  whose attrs hold the model record (name, fingerprint, card, domain, calibration) and the column units. Quote `sigma_cal_<label>`.

Everything else lives in the submodules (`spectra_ml.prediction`, `spectra_ml.streaming`, ...).
Names are imported on first use, so `import spectra_ml` stays light (no torch until needed).
"""

import warnings as _warnings

# tqdm.auto in a Jupyter kernel without ipywidgets (the executed chapters') warns "IProgress not found" and falls
# back to its text bars: the same bars, without that warning printed in every chapter
_warnings.filterwarnings("ignore", message="IProgress not found")

import os as _os

if _os.environ.get("SPECTRA_ML_STAGE"):
    # a pipeline stage's kernel (pipeline.stage_environment): astropy's notes on a FITS file's own metadata (unit
    # strings such as '[Sun]' or 'dex', column names such as '[Fe/H]') would fill the executed chapter; the values
    # read are unchanged, and outside the stages these notes show as usual
    _warnings.filterwarnings("ignore", message=r".*did not parse as fits unit")
    _warnings.filterwarnings("ignore", message="It is strongly recommended that column names contain only")

__all__ = ["__version__", "load_model", "label_stars", "Predictor", "read_xp"]

_LAZY = {
    "Predictor": "spectra_ml.prediction",
    "read_xp": "spectra_ml.data.xp_files",
    "label_stars": "spectra_ml.cli",
}


def load_model(
    path,  # checkpoint folder (model.pt + config.json, optionally calibration.json)
    **options,  # Predictor options, e.g. n_passes=20, seed=1, device="auto"
):
    "A checkpoint folder as a `Predictor` (`Predictor.load`)."
    from spectra_ml.prediction import Predictor

    return Predictor.load(path, **options)


def __getattr__(name):
    "The public names not defined here, imported from their module on first use."
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spectra_ml' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
