"""The examples of README.md and docs/*.md run as written, and none can escape the tests.

Each page's ```` ```python ```` blocks run in order in one namespace (a block may use what an earlier block of
its page defined), in a temporary working directory, and the page's check below asserts what the example
promises. ```` ```python no-run ```` blocks are compiled and checked for public imports only.
"""

import ast
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch

from tests.docs_examples import (DOCS, NO_RUN, ROOT, RUN, code_blocks, documentation_pages, executable_blocks,
                                 page_blocks, page_name)

# The import paths examples may use: the top level and the documented subpackages (docs/index.md). Internals
# (decoder/, runs/ modules, ...) may be restructured and must not appear in documentation.
PUBLIC_MODULES = {
    "dalle2_pytorch", "dalle2_pytorch.diffusion", "dalle2_pytorch.clip", "dalle2_pytorch.prior",
    "dalle2_pytorch.vae", "dalle2_pytorch.trainers", "dalle2_pytorch.data", "dalle2_pytorch.dataloaders",
    "dalle2_pytorch.runs", "dalle2_pytorch.eval", "dalle2_pytorch.serve", "dalle2_pytorch.karlo",
}
PYTHON_LANGUAGES = {"python", "python3", "py", "py3", "pycon", "ipython", "pyi"}


def run_page(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Execute the page's runnable blocks in order, in tmp_path, and return their shared namespace."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "docs_example"}
    for block in executable_blocks(ROOT / page):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # examples may warn (e.g. an untrained VAE); they must not fail
            exec(compile(block.code, block.where, "exec"), namespace)
    return namespace


def shape(namespace: dict, name: str) -> tuple:
    return tuple(namespace[name].shape)


def check_readme(ns: dict) -> None:
    assert torch.isfinite(ns["loss"])
    assert shape(ns, "images") == (2, 3, 32, 32) and 0 <= ns["images"].min() <= ns["images"].max() <= 1
    assert (Path("my-dalle2") / "pipeline.json").is_file()


def check_index(ns: dict) -> None:
    import dalle2_pytorch
    assert all(ns[name] is getattr(dalle2_pytorch, name) for name in ("CLIP", "DALLE2", "VQGanVAE", "Decoder"))


def check_diffusion(ns: dict) -> None:
    assert shape(ns, "samples") == (4, 8) and torch.isfinite(ns["loss"])


def check_clip(ns: dict) -> None:
    assert shape(ns, "logits") == (2, 2)
    assert shape(ns, "image_encodings") == (2, 16, 64)
    assert ns["ids"] == [320, 1125, 539, 320, 2368] and ns["text"] == "a photo of a cat"
    assert shape(ns, "tokens") == (1, 77)
    assert shape(ns, "text_encodings") == (2, 16, 64) and shape(ns, "image_embed") == (2, 64)   # the adapter's
    assert (Path("my-clip") / "config.json").is_file()


def check_prior(ns: dict) -> None:
    assert shape(ns, "samples") == (4, 64) and torch.isfinite(ns["loss"])


def check_decoder(ns: dict) -> None:
    assert shape(ns, "pred") == shape(ns, "guided") == (2, 3, 32, 32)
    assert shape(ns, "low") == (2, 3, 16, 16) and shape(ns, "high") == (2, 3, 32, 32)
    assert shape(ns, "samples") == (2, 3, 32, 32)
    assert shape(ns["sampling_input"], "lowres_cond_img") == (2, 3, 32, 32)
    assert ns["sampling_input"]["lowres_noise_level"].tolist() == [200, 200]   # the fixed sampling level 0.2
    assert torch.isfinite(ns["stage_loss"]) and shape(ns, "lowres") == (2, 3, 16, 16)   # the 16 px random crop
    assert shape(ns, "inpainted") == (1, 3, 32, 32)
    assert shape(ns, "images") == (4, 3, 32, 32)
    assert ns["extra_parameters"] > 0


def check_vae(ns: dict) -> None:
    assert shape(ns, "latents") == (4, 128, 8, 8) and shape(ns, "reconstructions") == (4, 3, 64, 64)


def check_training(ns: dict) -> None:
    assert shape(ns, "images") == (8, 3, 32, 32) and shape(ns, "image_embeds") == (8, 64)
    assert ns["decoder_trainer"].num_steps_taken(1) == 1
    assert len(ns["losses"]) == 2 and set(ns["losses"][-1]) == {"prior", "unet1", "decoder", "loss"}
    assert ns["resumed"].step == 3 and len(ns["more"]) == 1 and shape(ns, "pictures") == (1, 3, 16, 16)
    assert ns["decoder"].num_unets == 2
    assert Path("checkpoints/decoder.safetensors").is_file()
    assert ns["fast_trainer"].num_steps_taken() == 1 and ns["fast_unet"].memory_format is torch.channels_last


def check_pipeline(ns: dict) -> None:
    assert shape(ns, "images") == (1, 3, 32, 32) and len(ns["pil_images"]) == 1
    assert type(ns["dalle2"]).__name__ == "DALLE2" and (Path("my-dalle2") / "pipeline.json").is_file()
    assert ns["dalle2"].sampling_defaults.steps == 5 and ns["dalle2"].sampling_defaults.prior_sampler == "ddim"
    assert shape(ns, "best") == (1, 3, 32, 32) and shape(ns, "candidates") == (1, 3, 3, 32, 32)
    assert len(ns["cats"]) == 2 and ns["cats"][0].size == (32, 32)
    assert len(ns["first_try"]) == 1 and ns["first_try"][0].size == (16, 16)


def check_data(ns: dict) -> None:
    assert shape(ns, "images") == (64, 3, 32, 32) and len(ns["captions"]) == 64
    assert shape(ns, "tensor") == (3, 64, 64) and shape(ns, "small") == (1, 3, 32, 32)


def check_cli(ns: dict) -> None:
    assert 0.0 <= ns["summary"]["faithfulness"] <= 1.0
    assert (Path("toy-demo") / "results.json").is_file()


def check_pretrained(ns: dict) -> None:
    assert type(ns["prior_again"]).__name__ == "DiffusionPrior"
    assert ns["decoder_again"].num_unets == 1


def check_evaluation(ns: dict) -> None:
    assert set(ns["scores"]) == {"clip_score", "clip_score_unrelated", "clip_score_gap"}
    assert "similarity_with_image" in ns["metrics"]
    assert ns["result"]["faithfulness"] == 1.0


def check_karlo(ns: dict) -> None:
    assert type(ns["pipe"]).__name__ == "KarloPipeline" and shape(ns, "images") == (2, 3, 16, 16)


CHECKS: dict[str, Callable[[dict], None]] = {
    "README.md": check_readme,
    "docs/index.md": check_index,
    "docs/diffusion.md": check_diffusion,
    "docs/clip.md": check_clip,
    "docs/prior.md": check_prior,
    "docs/decoder.md": check_decoder,
    "docs/vae.md": check_vae,
    "docs/training.md": check_training,
    "docs/pipeline.md": check_pipeline,
    "docs/data.md": check_data,
    "docs/cli.md": check_cli,
    "docs/pretrained.md": check_pretrained,
    "docs/evaluation.md": check_evaluation,
    "docs/karlo.md": check_karlo,
}
NEEDS = {"docs/karlo.md": "diffusers"}  # pages whose examples need an optional extra (skipped without it)
SLOW_PAGES = {"docs/decoder.md", "docs/training.md", "docs/cli.md"}


@pytest.mark.parametrize("page", [pytest.param(page, marks=[pytest.mark.slow] if page in SLOW_PAGES else [])
                                  for page in CHECKS])
def test_page_examples_run(page, tmp_path, monkeypatch):
    if page in NEEDS:
        pytest.importorskip(NEEDS[page])
    check = CHECKS[page]
    check(run_page(page, tmp_path, monkeypatch))


def test_every_page_with_runnable_examples_is_run_and_checked():
    runnable = {page_name(path) for path in documentation_pages() if executable_blocks(path)}
    assert runnable == set(CHECKS), (
        f"pages with ```python blocks but no check in CHECKS: {sorted(runnable - set(CHECKS))}; "
        f"checks for pages without runnable blocks: {sorted(set(CHECKS) - runnable)}")


def test_every_python_block_is_run_or_marked_no_run():
    """Python code needs the fence ```python (executed) or ```python no-run (not executed), nothing else."""
    bad = []
    for path in documentation_pages():
        for block in page_blocks(path):
            looks_python = block.language in PYTHON_LANGUAGES or block.language.startswith("python")
            if looks_python and block.info not in (RUN, NO_RUN):
                bad.append(f"{block.where}: fence info {block.info!r}")
            if not block.info and any(line.startswith(("import ", "from ")) for line in block.code.splitlines()):
                bad.append(f"{block.where}: Python code in a fence without a language")
    assert not bad, "fence Python examples as ```python or ```python no-run:\n" + "\n".join(bad)


def test_examples_compile_and_import_only_the_public_api():
    bad = []
    for path in documentation_pages():
        for block in page_blocks(path):
            if block.info not in (RUN, NO_RUN):
                continue
            tree = ast.parse(block.code, block.where)          # a SyntaxError names the page and line
            for node in ast.walk(tree):
                modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                           else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                bad += [f"{block.where}: imports {m}" for m in modules
                        if m.split(".")[0] == "dalle2_pytorch" and m not in PUBLIC_MODULES]
    assert not bad, "examples may import only " + ", ".join(sorted(PUBLIC_MODULES)) + ":\n" + "\n".join(bad)


def test_code_blocks_parses_fences_info_strings_and_indented_blocks():
    text = ("# t\n```python\nx = 1\n```\ntext\n```python no-run\nimport os\n```\n"
            "1. step\n   ```bash\n   ls -l\n   ```\n````python\n```\ny = 2\n````\n")
    blocks = code_blocks(text, "page.md")
    assert [(b.line, b.info, b.runs) for b in blocks] == [
        (2, "python", True), (6, "python no-run", False), (10, "bash", False), (13, "python", True)]
    assert blocks[2].code == "ls -l\n" and blocks[3].code == "```\ny = 2\n"
    with pytest.raises(ValueError, match="page.md:1: a code fence is never closed"):
        code_blocks("```python\nx = 1\n", "page.md")


def load_fences_hook():
    spec = importlib.util.spec_from_file_location("docs_fences_hook", DOCS / "hooks" / "fences.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mkdocs_hook_renders_no_run_fences_as_python():
    hook = load_fences_hook()
    page = "a\n```python no-run\nx\n```\n  ```python  no-run \ny\n  ```\n```python\nz\n```\n```bash\n"
    assert hook.on_page_markdown(page) == "a\n```python\nx\n```\n  ```python\ny\n  ```\n```python\nz\n```\n```bash\n"


def mkdocs_nav_pages() -> set[str]:
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def leaves(item) -> list[str]:
        if isinstance(item, str):
            return [item]
        if isinstance(item, dict):
            return [page for value in item.values() for page in leaves(value)]
        return [page for value in item for page in leaves(value)]

    return set(leaves(config["nav"]))


def test_mkdocs_nav_lists_every_docs_page():
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert mkdocs_nav_pages() == pages


@pytest.mark.optional
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="needs the docs extra: pip install -e '.[docs]'")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "decoder" / "index.html").is_file()
