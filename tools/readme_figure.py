"""Copy the figure of the cell tagged ``readme-figure`` in chapter 0 to book/_static/zoo_samples.png,
so the README shows a picture the book really computed. Run after ``make execute``."""

import base64
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    nb = json.loads((ROOT / "notebooks" / "00_model_zoo.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "readme-figure" in c.get("metadata", {}).get("tags", []))
    png = next(o["data"]["image/png"] for o in cell["outputs"] if "image/png" in o.get("data", {}))
    out = ROOT / "book" / "_static" / "zoo_samples.png"
    out.write_bytes(base64.b64decode(png))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
