"""`dalle2 train pipeline` on a captioned folder, end to end with the tiny preset, then `dalle2 sample` on its
output; stages reused on a rerun, resumed after an interruption; the one-command learning test (slow)."""

import json
import time

import pytest

from dalle2_pytorch.cli.main import main
from dalle2_pytorch.dalle2 import DALLE2
from dalle2_pytorch.data.toy_folder import write_toy_folder
from dalle2_pytorch.pipeline_files import PIPELINE_FILE


def test_one_command_trains_a_pipeline_that_sample_reads(toy_folder, tmp_path, capsys):
    out = tmp_path / "pipeline"
    assert main(["train", "pipeline", "--images", str(toy_folder), "--image-size", "32", "--preset", "tiny",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 unreadable files skipped" in printed
    for part in (PIPELINE_FILE, "prior/config.json", "decoder/config.json", "clip/config.json", "grid.png",
                 "embeddings/img_emb/img_emb_0.npy", "embeddings/text_emb/text_emb_0.npy", "configs/decoder.json"):
        assert (out / part).is_file(), part
    results = json.loads((out / "results.json").read_text())
    assert results["num_images"] == 24 and results["num_unreadable"] == 1 and results["num_captions"] == 4
    assert "faithfulness" in results and results["cpu_seconds"] > 0
    pipeline = DALLE2.from_pretrained(out)
    assert pipeline.decoder.image_sizes[-1] == 32 and not pipeline.decoder.unconditional
    assert pipeline.sampling_defaults.sampler == "ddim"   # the preset's sampling settings were saved

    samples = tmp_path / "samples"
    assert main(["sample", "a red circle", "--checkpoint", str(out), "--num-images", "2", "--out", str(samples)]) == 0
    assert len(list(samples.glob("*_a_red_circle.png"))) == 2

    markers = [out / stage / "demo_stage.json" for stage in ("clip", "prior", "decoder")]
    before = [p.stat().st_mtime_ns for p in markers]
    assert main(["train", "pipeline", "--images", str(toy_folder), "--image-size", "32", "--preset", "tiny",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for stage in ("clip", "prior", "decoder"):
        assert f"reusing {stage}" in printed
    assert "reusing the embeddings" in printed
    assert before == [p.stat().st_mtime_ns for p in markers]   # nothing trained again

    (toy_folder / "0000.txt").write_text("a blue square")  # the data changed: every stage is trained again
    assert main(["train", "pipeline", "--images", str(toy_folder), "--image-size", "32", "--preset", "tiny",
                 "--out", str(out)]) == 0
    assert "reusing" not in capsys.readouterr().out


def test_pipeline_command_checks_its_arguments(toy_folder, tmp_path, capsys):
    cases = [(["--images", str(tmp_path / "missing")], "is not a folder"),
             (["--images", str(toy_folder), "--image-size", "48"], "choose one of [32, 64]"),
             (["--images", str(toy_folder), "--config", "x.json"], "takes --preset"),
             ([], "needs --images")]
    for flags, message in cases:
        assert main(["train", "pipeline", "--out", str(tmp_path / "o"), *flags]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "prior", "--clip", "x", "--config", "c.json"]) == 2
    assert "--clip is for `train pipeline`" in capsys.readouterr().err


def test_an_interrupted_stage_resumes_from_its_last_checkpoint(toy_folder, tmp_path, monkeypatch):
    from dalle2_pytorch.runs import pipeline, stages
    from dalle2_pytorch.runs.loop import TrainingRun
    from dalle2_pytorch.runs.tasks import DecoderTask

    out = tmp_path / "pipeline"
    real_run, real_step, started = TrainingRun.run, DecoderTask.train_step, []

    def recording_run(self):
        started.append((self.config.kind, self.counters["step"]))
        return real_run(self)

    def failing_step(self, trainer, batch, step):
        if step == 8:   # the decoder stage saves every step; steps 1..8 are in its latest checkpoint
            raise KeyboardInterrupt
        return real_step(self, trainer, batch, step)

    monkeypatch.setattr(TrainingRun, "run", recording_run)
    monkeypatch.setattr(DecoderTask, "train_step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_pipeline(toy_folder, out, image_size=32, preset="tiny", resume=True, show_progress=False)
    assert not (out / "decoder" / stages.MARKER).is_file() and started[-1] == ("decoder", 0)
    monkeypatch.setattr(DecoderTask, "train_step", real_step)
    pipeline.train_pipeline(toy_folder, out, image_size=32, preset="tiny", resume=True, show_progress=False)
    assert started[-1] == ("decoder", 8)    # continued, not restarted
    assert (out / PIPELINE_FILE).is_file()
    pipeline.train_pipeline(toy_folder, out, image_size=32, preset="tiny", resume=False, show_progress=False)
    assert started[-1] == ("decoder", 8)    # done stages are reused, with or without --resume


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(3600)   # minutes on a quiet machine, far more on a busy one
def test_the_small_preset_learns_the_toy_folder(tmp_path):
    """Through the one command, on the 18-caption toy folder (2304 images): >= 90 % toy faithfulness.
    About 5 minutes on a quiet 2-core machine."""
    folder = write_toy_folder(tmp_path / "toy", num_samples=2304, image_size=32)
    started = time.perf_counter()
    assert main(["train", "pipeline", "--images", str(folder), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    print(f"small preset: {results['faithfulness']:.1%} in {time.perf_counter() - started:.0f} s "
          f"({results['cpu_seconds']} CPU s)")
    assert results["image_size"] == 32 and results["faithfulness"] >= 0.9


def test_eval_scores_a_pipeline_on_a_captioned_folder(toy_folder, tmp_path, capsys):
    out = tmp_path / "pipeline"
    assert main(["train", "pipeline", "--images", str(toy_folder), "--image-size", "32", "--preset", "tiny",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--images", str(toy_folder), "--images-per-caption", "2",
                 "--out", str(tmp_path / "metrics.json")]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("clip_score", "real_clip_score", "fid", "kid_mean", "diversity", "diversity_clip", "faithfulness"):
        assert key in metrics, key
    assert metrics["num_captions"] == 4 and metrics["num_images"] == 8 and metrics["num_unreadable"] == 1
    assert metrics["diversity"] > 0
    assert main(["eval", "--checkpoint", str(out), "--images", str(toy_folder), "--images-per-caption", "2",
                 "--sampler", "ddim", "--eta", "1", "--prior-num-samples", "1", "--cond-scale", "2",
                 "--out", str(tmp_path / "knobs.json")]) == 0
    assert json.loads((tmp_path / "knobs.json").read_text())["clip_score"] != metrics["clip_score"]
    assert main(["eval", "--checkpoint", str(out), "--eta", "1"]) == 2
    assert "applies with --images" in capsys.readouterr().err
