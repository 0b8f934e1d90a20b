"""`dalle2 eval` hands its options to run_evaluation and writes the metrics where asked."""

import json

from dalle2_pytorch.cli import main as cli


def test_eval_passes_options_and_writes_json(monkeypatch, tmp_path, capsys):
    import dalle2_pytorch.eval as eval_module

    seen = {}

    def fake_run(checkpoint, **kwargs):
        seen.update(checkpoint=checkpoint, **{k: v for k, v in kwargs.items() if k != "say"})
        return {"faithfulness": 0.5, "fid": 1.25}

    monkeypatch.setattr(eval_module, "run_evaluation", fake_run)
    out = tmp_path / "metrics.json"
    assert cli.main(["eval", "--checkpoint", "ck", "--images-per-caption", "2", "--features", "clip",
                     "--out", str(out)]) == 0
    assert seen == {"checkpoint": "ck", "images_per_caption": 2, "num_real_images": 512, "features": "clip", "seed": 0}
    assert json.loads(out.read_text()) == {"faithfulness": 0.5, "fid": 1.25}
    assert '"faithfulness": 0.5' in capsys.readouterr().out


def test_eval_missing_checkpoint_is_one_clear_line(capsys, tmp_path):
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
