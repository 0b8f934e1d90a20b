"""The `dalle2` command end to end, in subprocesses: the tiny demo, reuse of its checkpoints, sampling from them,
config validation, and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dalle2_pytorch.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def dalle2(*args, cwd=None, entry="main"):
    code = f"import sys; from dalle2_pytorch.cli.main import {entry}; sys.exit({entry}(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_demo_tiny_writes_images_grid_score_and_reuses_checkpoints(tmp_path):
    out = tmp_path / "outputs"
    first = dalle2("demo", "--preset", "tiny", "--out", out)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "faithfulness" in first.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["preset"] == "tiny"
    images = sorted((out / "images").glob("*.png"))
    assert len(images) == results["num_images"] == 4
    # the score is the pixel judge's verdict on the written images and their captions
    from dalle2_pytorch.data import faithfulness

    pixels = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255
                          for p in images])
    captions = [reading["caption"] for reading in results["readings"]]
    assert results["faithfulness"] == pytest.approx(faithfulness(pixels, captions, attributes=("colour", "shape")))
    assert results["faithfulness"] == pytest.approx(sum(r["match"] for r in results["readings"]) / len(captions))
    assert Image.open(images[0]).size == (16, 16)
    grid = Image.open(out / "grid.png")
    assert grid.size[0] > 4 * 96 and grid.size[1] > 96  # one row of 4 cells with captions beneath
    for stage in ("clip", "prior", "decoder"):
        assert (out / "checkpoints" / stage / "config.json").is_file()
        assert (out / "checkpoints" / stage / "model.safetensors").is_file()
    pipeline_file = json.loads((out / "checkpoints" / "pipeline.json").read_text())   # the one pipeline layout
    assert pipeline_file["sampling"]["decoder"]["sampler"] is not None and not (out / "checkpoints" / "sampling.json").exists()

    weights = {stage: (out / "checkpoints" / stage / "model.safetensors").read_bytes()
               for stage in ("clip", "prior", "decoder")}
    again = dalle2("demo", "--preset", "tiny", "--out", out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("reusing") == 3
    for stage, data in weights.items():  # reused, not retrained: the same weights, byte for byte
        assert (out / "checkpoints" / stage / "model.safetensors").read_bytes() == data, stage

    samples = tmp_path / "samples"
    sampled = dalle2("a red circle", "--checkpoint", out / "checkpoints", "--num-images", "2", "--seed", "1",
                     "--out", samples, entry="dream")
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert len(list(samples.glob("*_a_red_circle.png"))) == 2 and (samples / "grid.png").is_file()

    from dalle2_pytorch.dalle2 import DALLE2  # the demo's folder re-saved as a pipeline works as --checkpoint too

    DALLE2.from_pretrained(out / "checkpoints").save_pretrained(tmp_path / "dalle2")
    assert main(["sample", "a blue square", "--checkpoint", str(tmp_path / "dalle2"), "--num-images", "1",
                 "--steps", "2", "--out", str(tmp_path / "from_dalle2")]) == 0
    assert (tmp_path / "from_dalle2" / "000_a_blue_square.png").is_file()


def run_main(capsys, *args):
    """`dalle2 ARGS` in this process (faster than a subprocess): (exit status, stdout, stderr)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    status, _, err = run_main(capsys, "train", "decoder", "--config", tmp_path / "nope.json")
    assert status == 2 and err.startswith("error: ") and "does not exist" in err and "Traceback" not in err
    status, _, err = run_main(capsys, "--debug", "train", "decoder", "--config", tmp_path / "nope.json")
    assert status == 2 and "Traceback" in err
    status, _, err = run_main(capsys, "sample", "a red circle", "--checkpoint", tmp_path)
    assert status == 2 and "prior/config.json" in err
    status, _, err = run_main(capsys, "train", "prior", "--images", tmp_path)
    assert status == 2 and "unconditional decoder" in err


def test_config_validate_and_show(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "decoder", "model": {"unet": [{"dim": "big"}], "colour": 1},
                               "data": {"source": "toy"}}))
    status, _, err = run_main(capsys, "config", "validate", bad)
    assert status == 2
    assert "model.unet.0.dim" in err and "model.colour: unknown field" in err
    status, out, _ = run_main(capsys, "config", "validate", ROOT / "configs" / "toy_decoder.json")
    assert status == 0 and "valid decoder config" in out
    status, out, _ = run_main(capsys, "config", "show", "--kind", "prior")
    assert status == 0 and "cond_drop_prob: float = 0.0" in out  # the constructor's default


def test_train_decoder_on_a_folder_of_images(tmp_path, capsys):
    """`dalle2 train decoder --images DIR` trains both unets of its cascade on the folder: at fixed noise, the trained
    decoder's loss on the folder's pictures is below the untrained decoder's, and falls much more than on pictures
    unlike the folder's (uniform noise)."""
    from dalle2_pytorch.decoder.decoder import Decoder

    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(20):
        Image.new("RGB", (40, 40), (12 * i, 255 - 12 * i, 100)).save(folder / f"{i:02d}.png")
    status, out, err = run_main(capsys, "train", "decoder", "--images", folder, "--image-size", "16", "--steps", "12",
                                "--out", tmp_path / "run")
    assert status == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["step"] == 12 and summary["samples_seen"] == 12 * 16
    trained = Decoder.from_pretrained(tmp_path / "run" / "latest" / "model").eval()
    torch.manual_seed(0)
    untrained = Decoder.from_config(trained.config).eval()
    pictures = torch.stack([torch.from_numpy(np.array(Image.open(path).convert("RGB").resize((16, 16))))
                            for path in sorted(folder.glob("*.png"))]).permute(0, 3, 1, 2).float() / 255
    unlike = torch.rand(pictures.shape, generator=torch.Generator().manual_seed(0))

    def fixed_noise_loss(decoder, images, unet):  # the same noise, timesteps and low-res blur for both decoders
        torch.manual_seed(0)
        with torch.no_grad():
            return sum(decoder(images, unet_number=unet).item() for _ in range(3)) / 3

    for unet in (1, 2):
        gain = 1 - fixed_noise_loss(trained, pictures, unet) / fixed_noise_loss(untrained, pictures, unet)
        gain_unlike = 1 - fixed_noise_loss(trained, unlike, unet) / fixed_noise_loss(untrained, unlike, unet)
        assert gain > 0.005 and gain > 3 * abs(gain_unlike), (unet, gain, gain_unlike)


def test_sample_prior_flags_reach_the_prior(tmp_path, capsys):
    """--prior-sampler/--prior-steps/--prior-cond-scale give the images the Python call with those keywords gives,
    and differ from the saved defaults' images; `dream --threads` sets torch's thread count."""
    from dalle2_pytorch.cli.main import dream
    from dalle2_pytorch.dalle2 import DALLE2
    from tests.serve.tiny_model import save_tiny_checkpoint

    checkpoint = save_tiny_checkpoint(tmp_path / "pipeline")

    def sampled(folder, *flags):
        assert main(["sample", "a red circle", "--checkpoint", str(checkpoint), "--num-images", "1", "--seed", "3",
                     "--out", str(tmp_path / folder), *flags]) == 0
        return np.asarray(Image.open(tmp_path / folder / "000_a_red_circle.png"), dtype=np.int16)

    default = sampled("default")
    flagged = sampled("flagged", "--prior-sampler", "ddpm", "--prior-steps", "7", "--prior-cond-scale", "3.0")
    assert np.abs(default - flagged).max() > 0
    pipeline = DALLE2.from_pretrained(checkpoint)
    expected = pipeline(["a red circle"], prior_sampler="ddpm", prior_steps=7, prior_cond_scale=3.0,
                        generator=torch.Generator().manual_seed(3))[0]
    expected = (expected.permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(flagged - expected).max() <= 1

    threads = torch.get_num_threads()
    try:
        assert dream(["a red circle", "--checkpoint", str(checkpoint), "--num-images", "1", "--threads", "2",
                      "--out", str(tmp_path / "dream")]) == 0
        assert torch.get_num_threads() == 2
        assert dream(["a red circle", "--checkpoint", str(checkpoint), "--threads", "0",
                      "--out", str(tmp_path / "dream")]) == 2
        assert "--threads 0" in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
