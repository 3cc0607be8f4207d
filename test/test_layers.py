"""The package's imports point down only (docs/architecture.md), checked by the script anyone
can run, `python -m seg_perception.tools.layers`; and that script does catch an upward
import, a sideways one, a circle, an unplaced folder and an import of a module that is not
there (one that moved) in a package made here."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO
from seg_perception.tools.layers import check, part_of


def test_the_package_has_one_way_layers():
    res = subprocess.run([sys.executable, "-m", "seg_perception.tools.layers"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all pointing down, no circle" in res.stdout
    assert "runtime -> nets" in res.stdout and "evaluation -> runtime" in res.stdout


def _package(root: Path, files: dict) -> Path:
    pkg = root / "seg_perception"
    for rel, text in {"__init__.py": "", **files}.items():
        f = pkg / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))
    return pkg


def test_an_upward_import_and_the_circle_it_closes_are_found(tmp_path):
    pkg = _package(tmp_path, {
        "runtime/__init__.py": "",
        "runtime/backends.py": "def load():\n    from ..deploy.export import load_net  # lazy: still an edge\n",
        "deploy/__init__.py": "",
        "deploy/export.py": "from ..runtime import backends\nload_net = None\n",
    })
    report = check(pkg)
    assert not report.ok
    text = "\n".join(report.violations)
    assert "upward: runtime (runtime) imports deploy (areas) at seg_perception/runtime/backends.py:2" in text
    assert "circle between parts: deploy <-> runtime" in text
    assert "circle between modules: deploy.export <-> runtime.backends" in text


def test_sideways_imports_and_unplaced_parts_are_found(tmp_path):
    pkg = _package(tmp_path, {
        "train/__init__.py": "",
        "train/release.py": "from ..deploy import export\n",
        "deploy/__init__.py": "",
        "deploy/export.py": "import numpy\n",
        "deploy/commands.py": "from ..cli import command\nfrom ..evaluation import demo\n",
        "evaluation/__init__.py": "",
        "evaluation/demo.py": "",
        "cli.py": "",
        "extras/__init__.py": "from ..card import load_card\n",
        "card.py": "",
        "ros/__init__.py": "",
        "ros/node.py": "from .image_conversion import fill_image  # moved to runtime/\n",
    })
    text = "\n".join(check(pkg).violations)
    assert "sideways: train imports deploy, both on the areas floor" in text
    assert "extras: on no floor" in text
    assert "missing: ros.node imports ros.image_conversion, which is not a module of the package" in text
    # an area's commands.py is on the cli floor: it may combine areas and use the cli
    assert "deploy.commands" not in text
    assert part_of("deploy.commands") == "deploy.commands" and part_of("deploy.export") == "deploy"


def test_base_parts_may_share_but_not_in_a_circle(tmp_path):
    pkg = _package(tmp_path, {
        "card.py": "from .paths import x\n",
        "paths.py": "from .card import y\n",
        "nets/__init__.py": "from .registry import build_model\n",
        "nets/registry.py": "from .. import card\n",
    })
    text = "\n".join(check(pkg).violations)
    assert "circle between parts: card <-> paths" in text
    assert "nets" not in text
