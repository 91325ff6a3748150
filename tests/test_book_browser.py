"""The offline book in a real browser (headless Chromium): every TOC page must be clean,
and the check must catch a broken image, a thrown error and a TeX error."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_book  # noqa: E402

HTML = ROOT / "_build" / "offline" / "_build" / "html"


@pytest.fixture(scope="module")
def offline_html():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "book_offline.py")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return HTML


def test_every_page_passes_the_browser_check(offline_html):
    results = check_book.check_book(offline_html, check_book.toc_pages(),
                                    ROOT / "_build" / "screenshots")
    assert results and all(not problems for problems in results.values()), results
    for page in results:
        shot = ROOT / "_build" / "screenshots" / (page.replace("/", "__").removesuffix(".html") + ".png")
        assert shot.stat().st_size > 10_000, f"screenshot of {page} looks empty"


def test_the_check_catches_broken_pages(offline_html, tmp_path):
    site = tmp_path / "html"
    shutil.copytree(offline_html, site)
    page = site / "book" / "notation.html"
    broken = page.read_text().replace(
        "</body>",
        '<img alt="broken" src="data:image/png;base64,AAAAAAAA">'
        '<p><span class="math notranslate nohighlight">\\(\\frac{1}\\)</span></p>'
        "<script>throw new Error('deliberately broken page')</script></body>")
    page.write_text(broken)
    problems = check_book.check_book(site, ["book/notation.html"])["book/notation.html"]
    kinds = sorted({p.split(":")[0] for p in problems})
    assert kinds == ["TeX error", "image does not decode", "uncaught exception"], problems
    assert len(problems) == 3, problems


def test_the_check_catches_math_left_as_raw_tex(offline_html, tmp_path):
    site = tmp_path / "html"
    shutil.copytree(offline_html, site)
    page = site / "book" / "notation.html"
    page.write_text(page.read_text().replace("mathjax/tex-mml-chtml.js", "mathjax/missing.js"))
    problems = check_book.check_book(site, ["book/notation.html"])["book/notation.html"]
    assert any(p.startswith("raw TeX") for p in problems), problems
    assert any("missing.js" in p for p in problems), problems
