"""Packaging for spectra_ml: everything is read from settings.ini (the nbdev 2 convention)."""

from configparser import ConfigParser
from pathlib import Path
import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read(Path(__file__).parent / "settings.ini", encoding="utf-8")
c = cfg["DEFAULT"]


def _list(key):
    return c.get(key, "").split()


# The core installs what labelling stars needs; each extra adds one job's tools (settings.ini says which).
EXTRAS = {name: _list(f"{name}_requirements") for name in ("pipeline", "dask", "docs")}
EXTRAS["all"] = sorted({r for reqs in EXTRAS.values() for r in reqs})
EXTRAS["dev"] = _list("dev_requirements")


readme = Path(__file__).parent / "README.md"
setuptools.setup(
    name=c["lib_name"],
    version=c["version"],
    description=c["description"],
    long_description=readme.read_text(encoding="utf-8") if readme.exists() else c["description"],
    long_description_content_type="text/markdown",
    author=c["author"],
    author_email=c["author_email"],
    url=c["git_url"],
    license="Apache-2.0",
    keywords=c["keywords"],
    python_requires=">=" + c["min_python"],
    packages=setuptools.find_packages(include=[c["lib_path"], c["lib_path"] + ".*"]),
    include_package_data=True,
    # the released models (spectra_ml/released/<name>/: model.pt, JSON, card.md) travel in every install
    package_data={c["lib_path"]: ["released/*/*", "released/*.json", "released/*.md"]},
    install_requires=_list("requirements"),
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": _list("console_scripts"),
        "nbdev": [f"{c['lib_path']}={c['lib_path']}._modidx:d"],
    },
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Astronomy",
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
    ],
    zip_safe=False,
)
