"""`dalle2 serve` parses its options and hands them to serve_main."""

import pytest

from dalle2_pytorch.cli import main as cli


def test_serve_passes_options_to_serve_main(monkeypatch):
    seen = {}
    import dalle2_pytorch.serve as serve_module

    monkeypatch.setattr(serve_module, "serve_main", lambda checkpoint, **kw: seen.update(checkpoint=checkpoint, **kw))
    assert cli.main(["serve", "--checkpoint", "ckpt", "--port", "9000", "--max-batch", "2", "--max-queue", "3",
                     "--allowed-host", "dalle.example.org"]) == 0
    assert seen == {"checkpoint": "ckpt", "host": "127.0.0.1", "port": 9000, "max_batch": 2, "batch_window": 0.05,
                    "max_queue": 3, "device": None, "extra_allowed_hosts": ["dalle.example.org"]}


def test_serve_missing_checkpoint_is_one_clear_line(capsys, tmp_path):
    pytest.importorskip("fastapi")
    assert cli.main(["serve", "--checkpoint", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a saved DALLE2 pipeline" in err and "Traceback" not in err
    assert "pipeline.json" in err and "prior/config.json" in err  # says what files were expected
