"""What the README and docs/ show is what works: every block marked runnable runs (shell
blocks with the `facepoints` command of this environment, Python blocks with its Python),
every relative link resolves, the config reference is the one generated from the config
classes, and the README stays a front page."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
         *sorted((ROOT / "lab").glob("*.md")), ROOT / "configs" / "README.md",
         *sorted((ROOT / "src" / "facepoints" / "weights").glob("*.md"))]
BLOCK = re.compile(r"<!-- runnable -->\s*\n```(bash|python)\n(.*?)```", re.S)


def blocks():
    for page in PAGES:
        for k, m in enumerate(BLOCK.finditer(page.read_text())):
            yield pytest.param(m.group(1), m.group(2), id=f"{page.relative_to(ROOT)}#{k}")


@pytest.mark.parametrize("kind, code", list(blocks()))
def test_runnable_blocks_run(kind, code, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "FACEPOINTS_CACHE": str(tmp_path / "cache")}
    cmd = ["bash", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"


def test_every_page_has_its_runnable_blocks_found():
    assert len(list(blocks())) >= 3


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name}: link to {target} does not resolve"


def test_config_reference_is_generated_from_the_config_classes():
    from facepoints.training.config import config_reference

    assert (ROOT / "docs" / "config-reference.md").read_text() == config_reference(), \
        "regenerate: python -c \"from facepoints.training.config import config_reference; " \
        "open('docs/config-reference.md','w').write(config_reference())\""


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    table = text[text.index("## Commands"):text.index("## Models")]
    assert all(len(line) <= 200 for line in table.splitlines())
