"""The distribution has a name of its own (the index's dalle2-pytorch is the original project), every install hint
uses it, its license metadata is an SPDX expression, and the example configs ship inside the package."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from dalle2_pytorch.cli.main import main
from dalle2_pytorch.errors import DISTRIBUTION, install_hint

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_distribution_name_is_ours_and_every_hint_uses_it():
    project = PYPROJECT["project"]
    assert project["name"] == DISTRIBUTION == "unclip-pytorch"
    assert install_hint("serve") == "pip install 'unclip-pytorch[serve]'"
    assert set(project["scripts"]) == {"dalle2", "dream"}  # the commands keep their names
    offenders = [str(path.relative_to(ROOT)) for folder in ("dalle2_pytorch", "docs") for path in
                 (ROOT / folder).rglob("*") if path.suffix in (".py", ".md") and "install 'dalle2-pytorch" in
                 path.read_text(encoding="utf-8")]
    readme = (ROOT / "README.md").read_text()
    assert not offenders and "pip install 'dalle2-pytorch" not in readme and "unclip-pytorch" in readme


def test_license_metadata_is_an_spdx_expression_with_its_files():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and "LICENSE" in project["license-files"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert int(PYPROJECT["build-system"]["requires"][0].split(">=")[1]) >= 77  # setuptools reads the string form


def test_the_example_configs_are_package_data():
    import dalle2_pytorch

    shipped = Path(dalle2_pytorch.__file__).parent / "configs"
    names = {path.name for path in shipped.glob("*.json")}
    assert {"toy_demo.json", "toy_tiny_demo.json", "toy_decoder.json"} <= names
    assert names == {path.name for path in (ROOT / "configs").glob("*.json")}
    assert "configs/*.json" in PYPROJECT["tool"]["setuptools"]["package-data"]["dalle2_pytorch"]


def test_config_example_lists_and_writes_them(tmp_path, capsys):
    assert main(["config", "example"]) == 0
    listing = capsys.readouterr().out
    assert "toy_decoder" in listing and "demo" in listing
    assert main(["config", "example", "toy_tiny_demo", "--out", str(tmp_path)]) == 0
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == ["toy_tiny_clip.json", "toy_tiny_decoder.json", "toy_tiny_demo.json", "toy_tiny_prior.json"]
    assert json.loads((tmp_path / "toy_tiny_decoder.json").read_text()) == \
        json.loads((ROOT / "configs" / "toy_tiny_decoder.json").read_text())
    assert main(["config", "validate", str(tmp_path / "toy_tiny_demo.json")]) == 0
    assert main(["config", "example", "toy_tiny_demo", "--out", str(tmp_path)]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err
    assert main(["config", "example", "nope"]) == 2
