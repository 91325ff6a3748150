"""Build a self-contained copy of the book that reads well without internet.

The stock pages load MathJax 3 and the Jupyter widget manager from a CDN: offline, math stays
raw TeX and widgets stay empty. This script fetches the exact versions the HTML asks for from
the npm registry by name (``npm pack``; never committed), and builds the book with

* ``mathjax_path`` -> local MathJax 3.2.2 (``es5/tex-mml-chtml.js``),
* ``nb_ipywidgets_js`` -> local requirejs 2.3.4 and @jupyter-widgets/html-manager 1.0.6
  (``dist/embed-amd.js``),

into ``_build/offline/_build/html``. Usage: ``python tools/book_offline.py`` (``make book-offline``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / ".offline-assets"
STATIC = ASSETS / "static"
OUT = ROOT / "_build" / "offline"
PACKAGES = {  # npm spec -> (folder under _static, sub-folder of the package to keep)
    "mathjax@3.2.2": ("mathjax", "es5"),
    "@jupyter-widgets/html-manager@1.0.6": ("html-manager", "dist"),
    "requirejs@2.3.4": ("requirejs", ""),
}


def fetch_assets() -> None:
    """``npm pack`` each package once and unpack the part the pages need into ``STATIC``."""
    (ASSETS / "npm").mkdir(parents=True, exist_ok=True)
    for spec, (folder, keep) in PACKAGES.items():
        marker = STATIC / folder / ".version"
        if marker.is_file() and marker.read_text() == spec:
            continue
        proc = subprocess.run(["npm", "pack", spec, "--silent"], cwd=ASSETS / "npm",
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"npm pack {spec} failed:\n{proc.stderr}")
        tgz = ASSETS / "npm" / proc.stdout.strip().splitlines()[-1]
        tmp = ASSETS / "unpack"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(tgz) as tar:
            tar.extractall(tmp, filter="data")
        shutil.rmtree(STATIC / folder, ignore_errors=True)
        shutil.copytree(tmp / "package" / keep, STATIC / folder)
        shutil.rmtree(tmp)
        marker.write_text(spec)


def offline_config() -> Path:
    """The book's ``_config.yml`` plus the local asset paths, written next to the assets."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    # paths in a --config file are read relative to that file: make them absolute
    config["sphinx"]["local_extensions"] = {name: str(ROOT / folder) for name, folder
                                            in config["sphinx"].get("local_extensions", {}).items()}
    sphinx = config["sphinx"].setdefault("config", {})
    sphinx["mathjax_path"] = "mathjax/tex-mml-chtml.js"
    sphinx["nb_ipywidgets_js"] = {
        "requirejs/require.js": {},
        "html-manager/embed-amd.js": {"data-jupyter-widgets-cdn-only": "false"},
    }
    sphinx["html_static_path"] = [str(STATIC)]
    path = ASSETS / "_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> None:
    fetch_assets()
    config = offline_config()
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jb), "build", str(ROOT), "--config", str(config), "--path-output", str(OUT),
           "-W", "-n", "--keep-going"]
    sys.exit(subprocess.run(cmd).returncode)


if __name__ == "__main__":
    main()
