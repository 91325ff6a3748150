"""The Colab path: every chapter's setup lines and launch links, written from one place, and a check
that what a fresh Colab runtime installs covers what the chapters import.

The repository is named once, in ``_config.yml`` (``repository.url``, ``repository.branch``);
what Colab installs is listed once, in ``requirements-colab.txt`` (torch and torchvision come with
Colab). ``python tools/colab.py --write`` rewrites the first lines of every chapter's first code cell
and the launch line of its first Markdown cell from them (after a fork, or a change of either);
``python tools/colab.py`` checks both and the coverage, and exits 1 on a problem.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata as md
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements-colab.txt"
#: what a Colab runtime provides and the requirements file must not reinstall
COLAB_PROVIDES = ("torch", "torchvision")
LAB = "/content/lab"
BLOCK_START = "# Setup. On Colab: fetch the book, install what it needs"
BLOCK_END = f'    sys.path.insert(0, "{LAB}/src")\n'
LAUNCH_START = "*Run it:*"


def repository() -> tuple[str, str]:
    """``(url, branch)`` from ``_config.yml``."""
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return repo["url"], repo["branch"]


def setup_block(url: str, branch: str) -> str:
    """The first lines of every chapter's first code cell."""
    return (f"{BLOCK_START} (requirements-colab.txt;\n"
            f"# Colab brings torch). Written by tools/colab.py from _config.yml: do not edit by hand.\n"
            f"import os, subprocess, sys\n"
            f'if "google.colab" in sys.modules:\n'
            f'    if not os.path.isdir("{LAB}"):\n'
            f'        subprocess.run("git clone -q --depth 1 -b {branch} {url} {LAB} && cd {LAB} && "\n'
            f'                       "pip install -q -r requirements-colab.txt && pip install -q --no-deps -e .",\n'
            f"                       shell=True, check=True)\n"
            f"{BLOCK_END}")


def launch_line(url: str, branch: str, notebook: str) -> str:
    """The launch links at the end of every chapter's first Markdown cell."""
    repo = url.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{notebook}"
    binder = f"https://mybinder.org/v2/gh/{repo}/{branch}?urlpath=lab/tree/notebooks/{notebook}"
    return f"{LAUNCH_START} [open in Colab]({colab}) · [launch on Binder]({binder})"


def chapters() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").is_file()]


def _cells(nb: dict, kind: str) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == kind]


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines:
        lines[-1] = lines[-1].rstrip("\n")
    return lines


def write(path: Path) -> bool:
    """Rewrite ``path``'s setup block and launch line; True if the file changed."""
    url, branch = repository()
    nb = json.loads(path.read_text())
    code, md_cell = _cells(nb, "code")[0], _cells(nb, "markdown")[0]
    src = "".join(code["source"])
    if src.startswith(BLOCK_START):
        src = src[src.index(BLOCK_END) + len(BLOCK_END):]
    code["source"] = _lines(setup_block(url, branch) + "\n" + src.lstrip("\n"))
    text = "".join(md_cell["source"]).rstrip("\n")
    text = re.sub(r"\n\n" + re.escape(LAUNCH_START) + r".*$", "", text, flags=re.S)
    md_cell["source"] = _lines(text + "\n\n" + launch_line(url, branch, path.name))
    new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    changed = new != path.read_text()
    path.write_text(new)
    return changed


def check_cells(path: Path) -> list[str]:
    """Problems with ``path``'s setup block and launch line (empty if none)."""
    url, branch = repository()
    nb = json.loads(path.read_text())
    problems = []
    if not "".join(_cells(nb, "code")[0]["source"]).startswith(setup_block(url, branch)):
        problems.append(f"{path.name}: the first code cell does not start with the setup block (tools/colab.py --write)")
    if not "".join(_cells(nb, "markdown")[0]["source"]).rstrip().endswith(launch_line(url, branch, path.name)):
        problems.append(f"{path.name}: the first Markdown cell does not end with the launch line (tools/colab.py --write)")
    return problems


# --- coverage ------------------------------------------------------------------------------------

def requirements(path: Path = REQUIREMENTS) -> dict[str, str | None]:
    """``{distribution name (normalised): pinned version or None}`` of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[normalise(name)] = version.strip() or None
    return out


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(source: str) -> set[str]:
    """Top-level module names imported anywhere in ``source`` (IPython magics and shell lines dropped);
    relative imports as ``.name``."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names |= {f".{node.module}" if node.module else f".{a.name}" for a in node.names}
            else:
                names.add(node.module)
                if node.module == "dpmlatent":
                    names |= {f"dpmlatent.{a.name}" for a in node.names}
    return names


def _package_module(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "dpmlatent":
        return None
    base = ROOT / "src" / Path(*parts)
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def third_party_imports(source: str) -> set[str]:
    """Third-party top-level modules imported by ``source`` and by every ``dpmlatent`` module it uses
    (followed through the package's own imports)."""
    seen, sources, found = set(), [source], set()
    while sources:
        for name in _imports(sources.pop()):
            name = f"dpmlatent.{name[1:]}" if name.startswith(".") else name   # relative: inside the package
            top = name.split(".")[0]
            if top == "dpmlatent":
                for mod in ("dpmlatent", name):
                    path = _package_module(mod)
                    if path is not None and path not in seen:
                        seen.add(path)
                        sources.append(path.read_text())
            elif top not in sys.stdlib_module_names and top not in ("google", "__future__"):
                found.add(top)
    return found


def _requires(dist: str) -> set[str]:
    try:
        reqs = md.requires(dist) or []
    except md.PackageNotFoundError:
        return set()
    out = set()
    for req in reqs:
        if "extra ==" in req:
            continue
        out.add(normalise(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0]))
    return out


def installed_closure(roots) -> set[str]:
    """The distributions ``roots`` bring with them (their requirements, transitively, as installed here)."""
    done, todo = set(), [normalise(r) for r in roots]
    while todo:
        dist = todo.pop()
        if dist not in done:
            done.add(dist)
            todo.extend(_requires(dist) - done)
    return done


def coverage(reqs: dict[str, str | None] | None = None) -> dict[str, dict[str, list[str]]]:
    """For every chapter, the third-party modules that nothing the Colab setup installs (or Colab
    provides) brings: ``{chapter: {module: [distributions that would provide it]}}``; empty if covered."""
    reqs = requirements() if reqs is None else reqs
    covered = installed_closure([*reqs, *COLAB_PROVIDES])
    providers = {m: [normalise(d) for d in ds] for m, ds in md.packages_distributions().items()}
    missing = {}
    for path in chapters():
        nb = json.loads(path.read_text())
        source = "\n".join("".join(c["source"]) for c in _cells(nb, "code"))
        for module in sorted(third_party_imports(source)):
            dists = providers.get(module, [])
            if not dists or not set(dists) & covered:
                missing.setdefault(path.name, {})[module] = dists
    return missing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite every chapter's setup block and launch line")
    args = parser.parse_args(argv)
    if args.write:
        changed = [p.name for p in chapters() if write(p)]
        print(f"rewrote {len(changed)} chapters: {', '.join(changed) or 'none'}")
    problems = [msg for p in chapters() for msg in check_cells(p)]
    for chapter, modules in coverage().items():
        for module, dists in modules.items():
            problems.append(f"{chapter}: imports {module} ({', '.join(dists) or 'not installed here'}), "
                            f"which requirements-colab.txt does not bring")
    print("\n".join(problems) or "Colab path: setup blocks, launch lines and requirements cover every chapter")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
