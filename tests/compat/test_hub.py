"""Hub ids (``org/repo[@rev][/path]``, optionally ``hub:``) resolve through huggingface_hub's cache: reference
checkpoints, saved pipelines and the CLI's --checkpoint; tested offline (HF_HUB_OFFLINE=1 in a subprocess, with a
cache laid out as huggingface_hub writes it), never touching the network."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dalle2_pytorch.hub import parse_hub_id, resolve_pretrained

from tests.compat.legacy_fixtures import legacy_case, needs_legacy

pytest.importorskip("huggingface_hub", reason="optional extra 'hub' (huggingface_hub) not installed")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROOT = Path(__file__).resolve().parents[2]


def _prepopulate(cache: Path, files: dict[str, Path], repo: str = "laion/DALLE2-PyTorch", commit: str = COMMIT,
                 ref: str = "main") -> None:
    """The layout huggingface_hub writes: refs/<ref> -> commit, snapshots/<commit>/<path> (folders copied whole)."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / ref).write_text(commit)
    for name, source in files.items():
        target = base / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if Path(source).is_dir() else shutil.copyfile)(source, target)


def _run_offline(script: str, cache: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_hub_ids_are_parsed_and_local_paths_win(tmp_path, monkeypatch):
    assert parse_hub_id("org/repo") == ("org/repo", None, None)
    assert parse_hub_id("hub:org/re.po@v1.0/a/b.pth") == ("org/re.po", "v1.0", "a/b.pth")
    assert parse_hub_id("org/repo/sub/") == ("org/repo", None, "sub")
    assert parse_hub_id("org/../x") is None and parse_hub_id("a b/c") is None and parse_hub_id("repo") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "repo").mkdir(parents=True)
    assert resolve_pretrained("org/repo") == Path("org/repo")  # an existing path always wins
    assert resolve_pretrained("org/other") == Path("org/other")  # under an existing local folder: a local path
    assert resolve_pretrained(tmp_path / "missing") == tmp_path / "missing"  # the caller says what it expected
    with pytest.raises(ValueError, match="revision 'v1' but revision='v2'"):
        resolve_pretrained("laion/x@v1", revision="v2")
    with pytest.raises(ValueError, match="revision='v1' applies to Hugging Face Hub ids"):
        resolve_pretrained("org/repo", revision="v1")
    with pytest.raises(TypeError, match="Hub id"):
        resolve_pretrained(3)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"unclip-pytorch\[hub\]"):
        resolve_pretrained("laion/DALLE2-PyTorch/prior")


def test_local_paths_pass_through_and_bad_hub_names_are_explained(tmp_path):
    assert resolve_pretrained(tmp_path / "x.pth") == tmp_path / "x.pth"
    with pytest.raises(ValueError, match="not a Hugging Face Hub id"):
        resolve_pretrained("hub:laion-only")


@needs_legacy
def test_a_hub_name_loads_from_the_offline_cache_and_a_miss_is_a_clear_error(tmp_path):
    path, meta, _ = legacy_case("laion_decoder_110")
    (tmp_path / "kwargs.json").write_text(json.dumps(meta["kwargs"]))
    _prepopulate(tmp_path / "hub", {"decoder/v1.0.2/latest.pth": path, "decoder/v1.0.2/kwargs.json": tmp_path / "kwargs.json"})
    script = """
import sys, torch
from dalle2_pytorch.decoder import Decoder
local = Decoder.from_reference_checkpoint(sys.argv[1], sys.argv[2])
for name in ('hub:laion/DALLE2-PyTorch/decoder/v1.0.2/', 'laion/DALLE2-PyTorch/decoder/v1.0.2/'):
    decoder = Decoder.from_reference_checkpoint(name + 'latest.pth', name + 'kwargs.json')
    assert all(torch.equal(a, b) for a, b in zip(decoder.state_dict().values(), local.state_dict().values()))
try:
    Decoder.from_reference_checkpoint('hub:laion/DALLE2-PyTorch@main/decoder/1.5B/latest.pth', sys.argv[2])
except FileNotFoundError as error:
    print('MISS', error)
"""
    result = _run_offline(script, tmp_path / "hub", path, tmp_path / "kwargs.json")
    assert "MISS could not get hub:laion/DALLE2-PyTorch@main/decoder/1.5B/latest.pth" in result.stdout


PIPELINE_SCRIPT = """
import sys, torch
from pathlib import Path
from dalle2_pytorch import DALLE2, Decoder
from dalle2_pytorch.cli.main import main
from dalle2_pytorch.hub import resolve_pretrained
local = DALLE2.from_pretrained(sys.argv[1])
hub = DALLE2.from_pretrained('org/dalle2/pipelines/tiny')
assert resolve_pretrained('org/dalle2/pipelines/tiny').parts[-5:] == (
    'models--org--dalle2', 'snapshots', '0123456789abcdef0123456789abcdef01234567', 'pipelines', 'tiny')
assert all(torch.equal(a, b) for a, b in zip(hub.state_dict().values(), local.state_dict().values()))
assert hub.prior_num_samples == 2
assert DALLE2.from_pretrained('org/dalle2@v1/pipelines/tiny').prior_num_samples == 5
assert DALLE2.from_pretrained('hub:org/dalle2/pipelines/tiny', revision='v1').prior_num_samples == 5
decoder = Decoder.from_pretrained('org/dalle2/pipelines/tiny/decoder')
assert all(torch.equal(a, b) for a, b in zip(decoder.state_dict().values(), local.decoder.state_dict().values()))
for missing in ('org/absent', 'org/dalle2/pipelines/other'):
    try:
        DALLE2.from_pretrained(missing)
    except FileNotFoundError as error:
        print('MISS', error)
status = main(['sample', 'a red circle', '--checkpoint', 'org/dalle2/pipelines/tiny', '--num-images', '1',
               '--out', sys.argv[2]])
assert status == 0 and (Path(sys.argv[2]) / 'grid.png').is_file()
"""


def test_pipelines_load_from_a_hub_id_offline_and_the_cli_takes_one(tmp_path):
    from tests.serve.tiny_model import save_tiny_checkpoint

    main = save_tiny_checkpoint(tmp_path / "main")
    tagged = save_tiny_checkpoint(tmp_path / "tagged")
    spec = json.loads((tagged / "pipeline.json").read_text())
    (tagged / "pipeline.json").write_text(json.dumps({**spec, "prior_num_samples": 5}))
    _prepopulate(tmp_path / "hub", {"pipelines/tiny": main}, repo="org/dalle2")
    _prepopulate(tmp_path / "hub", {"pipelines/tiny": tagged}, repo="org/dalle2", commit="f" * 40, ref="v1")
    result = _run_offline(PIPELINE_SCRIPT, tmp_path / "hub", main, tmp_path / "samples")
    assert "MISS 'org/absent' is not a local path (it does not exist), and could not get org/absent" in result.stdout
    assert "the Hub repo org/dalle2 (revision main) has no 'pipelines/other'" in result.stdout


# ----------------------------------------------------------------------------- downloads only when asked
def _tiny_hf_config():
    transformers = pytest.importorskip("transformers", reason="optional extra 'hf' (transformers) not installed")
    return transformers, transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8), projection_dim=16)


def test_a_checkpoint_config_naming_a_hub_clip_downloads_nothing_unless_allowed(tmp_path, monkeypatch):
    import torch

    from dalle2_pytorch.clip.adapters import HFClipAdapter
    from dalle2_pytorch.decoder import Decoder, Unet
    from dalle2_pytorch.hub import allow_downloads

    transformers, config = _tiny_hf_config()
    torch.manual_seed(0)
    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", lambda name, **kw: transformers.CLIPModel(config))
    clip = HFClipAdapter("evil/clip")  # named by the user: fetched (here: built) as usual
    decoder = Decoder(unet=Unet(dim=8, dim_mults=(1,), image_embed_dim=16, cond_dim=8), clip=clip, image_size=32,
                      timesteps=10)
    decoder.save_pretrained(tmp_path / "decoder")

    def no_download(name, **kwargs):
        raise AssertionError(f"the checkpoint's config made from_pretrained download {name}")

    fetched = []

    def config_from_pretrained(name, local_files_only=False, **kwargs):
        if local_files_only:
            raise OSError(f"{name} is not in the cache")
        fetched.append(name)
        return config

    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", no_download)
    monkeypatch.setattr(transformers.CLIPConfig, "from_pretrained", config_from_pretrained)
    with pytest.raises(OSError, match="downloads nothing that its files name unless asked: pass allow_download=True"):
        Decoder.from_pretrained(tmp_path / "decoder")
    assert fetched == []
    loaded = Decoder.from_pretrained(tmp_path / "decoder", allow_download=True)  # the config only; weights: ours
    with allow_downloads():
        again = Decoder.from_pretrained(tmp_path / "decoder")
    # only the CLIP's config was looked up, for each opted-in load (the size check reads it on the meta device too)
    assert set(fetched) == {"evil/clip"} and len(fetched) >= 2
    for model in (loaded, again):
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), decoder.state_dict().values()))


def test_the_cli_opts_in_to_downloads_only_with_allow_download(monkeypatch, tmp_path):
    from dalle2_pytorch.cli.main import main
    from dalle2_pytorch.dalle2 import DALLE2
    from dalle2_pytorch.hub import download_allowed, loading_checkpoint

    seen = []

    def from_pretrained(directory, **kwargs):
        with loading_checkpoint():
            seen.append(download_allowed())
        raise FileNotFoundError("stop here")

    monkeypatch.setattr(DALLE2, "from_pretrained", from_pretrained)
    for flag in ([], ["--allow-download"]):
        assert main(["sample", "red", "--checkpoint", str(tmp_path), *flag]) == 2
    assert seen == [False, True]


def test_the_cli_default_checkpoint_is_never_looked_up_on_the_hub(monkeypatch, tmp_path):
    from dalle2_pytorch.cli.main import build_parser

    monkeypatch.chdir(tmp_path)  # no outputs/ here
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # a Hub lookup would raise ImportError
    for command in (["sample", "red"], ["eval"], ["serve"]):
        default = build_parser().parse_args(command).checkpoint
        assert resolve_pretrained(default) == Path("outputs/checkpoints")
