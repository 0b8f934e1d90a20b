"""Captions from .txt, captions.csv or captions.jsonl; `dalle2 embed --images` in clip-retrieval layout; a prior and
a per-caption CLIP run that read an image folder; --threads on every command and trainer.threads."""

import json

import numpy as np
import pytest
import torch

from dalle2_pytorch.cli.main import main
from tests import factories
from dalle2_pytorch.clip.adapters import BuiltinClipAdapter
from dalle2_pytorch.clip.tokenizer import tokenize
from dalle2_pytorch.data import ClipRetrievalEmbeddings, ImageFolderDataset
from dalle2_pytorch.data.captions import captions_for, read_caption_file
from dalle2_pytorch.data.image_folder import list_image_files, scan_captioned_folder
from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.loop import TrainingRun


def tiny_clip(directory):
    """The factories' tiny CLIP with the bundled tokenizer's vocabulary (captions are tokenized with it), saved."""
    clip = factories.tiny_clip(num_text_tokens=49408)
    clip.save_pretrained(directory)
    return clip


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_captions_from_a_caption_file(toy_folder, kind):
    files = list_image_files(toy_folder)
    expected = [path.with_suffix(".txt").read_text().strip() for path in files]
    for path in toy_folder.glob("*.txt"):
        path.unlink()
    if kind == "csv":
        lines = ["file,caption"] + [f'{p.name},"{c}"' for p, c in zip(files, expected)]
        (toy_folder / "captions.csv").write_text("\n".join(lines))
    else:
        (toy_folder / "captions.jsonl").write_text("\n".join(json.dumps({"image": p.name, "text": c})
                                                             for p, c in zip(files, expected)))
    assert captions_for(toy_folder, files) == expected
    assert ImageFolderDataset(toy_folder, image_size=16, captions=True)[3][1] == expected[3]
    (toy_folder / ("captions.jsonl" if kind == "csv" else "captions.csv")).write_text("file,caption\n")
    with pytest.raises(ValueError, match="keep one caption file"):
        read_caption_file(toy_folder)


def test_missing_captions_are_named(toy_folder):
    (toy_folder / "0003.txt").unlink()
    with pytest.raises(ValueError, match=r"1 images have no caption .*0003.png"):
        captions_for(toy_folder, list_image_files(toy_folder))


def test_scan_skips_and_counts_unreadable_images(toy_folder):
    scan = scan_captioned_folder(toy_folder)
    assert len(scan.files) == 24 and scan.unreadable == [str(toy_folder / "broken.png")]
    assert len(scan.distinct_captions) == 4 and set(scan.sizes) == {32}


def test_embed_folder_writes_image_and_text_embeddings_in_clip_retrieval_layout(toy_folder, tmp_path):
    clip = tiny_clip(tmp_path / "clip")
    out = tmp_path / "emb"
    assert main(["embed", "--images", str(toy_folder), "--clip", str(tmp_path / "clip"), "--out", str(out)]) == 0
    embeddings = ClipRetrievalEmbeddings.from_folder(out, captions=True)
    assert len(embeddings) == 24 and embeddings.dim == 16
    import pyarrow.parquet as parquet

    table = parquet.read_table(out / "metadata" / "metadata_0.parquet").to_pydict()
    row = 5
    name, caption = table["image_path"][row], table["caption"][row]
    assert (toy_folder / name).with_suffix(".txt").read_text().strip() == caption
    adapter = BuiltinClipAdapter(clip).eval()
    text = adapter.embed_text(tokenize([caption], context_length=8, truncate=True)).text_embed
    assert np.allclose(np.load(out / "text_emb" / "text_emb_0.npy")[row], text[0].detach().numpy(), atol=1e-5)
    assert json.loads((out / "embed_info.json").read_text())["unreadable"] == [str(toy_folder / "broken.png")]


def test_prior_and_per_caption_clip_runs_read_an_image_folder(toy_folder, tmp_path):
    tiny_clip(tmp_path / "clip")
    common = {"trainer": {"max_steps": 2, "epochs": 100}, "tracker": {"console": False},
              "evaluation": {"validate_every": 0, "sample_every": 0, "sample_steps": 2}}
    prior = config_from_dict({
        "kind": "prior", **common,
        "model": {"net": {"dim": 16, "depth": 1, "dim_head": 8, "heads": 2, "max_text_len": 8},
                  "clip": {"kind": "builtin", "path": str(tmp_path / "clip")}, "timesteps": 10,
                  "condition_on_text_encodings": False},
        "data": {"source": "image_folder", "path": str(toy_folder), "image_size": 16, "captions": True,
                 "batch_size": 8},
        "checkpointing": {"directory": str(tmp_path / "prior")}})
    assert TrainingRun(prior, show_progress=False).run()["step"] == 2

    (toy_folder / "broken.png").unlink()   # its stand-in (the next readable file) would bring another caption
    seen = []
    clip = config_from_dict({
        "kind": "clip", **common,
        "model": {"dim_text": 16, "dim_image": 16, "dim_latent": 8, "num_text_tokens": 49408, "text_seq_len": 8,
                  "text_enc_depth": 1,
                  "text_heads": 2, "text_dim_head": 8, "visual_enc_depth": 1, "visual_heads": 2,
                  "visual_dim_head": 8, "visual_image_size": 16, "visual_patch_size": 8},
        "data": {"source": "image_folder", "path": str(toy_folder), "image_size": 16, "captions": True,
                 "batch_size": 8, "batches": "per_caption", "val_fraction": 0.1},
        "checkpointing": {"directory": str(tmp_path / "clipr")}})
    TrainingRun(clip, show_progress=False, on_batch=lambda step, batch: seen.append(batch["captions"])).run()
    assert seen and all(sorted(captions) == sorted(list(set(captions)) * 2)
                        and len(set(captions)) == 4 for captions in seen)   # each of the 4 captions twice


@pytest.mark.parametrize("command", [["config", "show", "--kind", "clip"], ["embed", "--clip", "c", "--out", "o"],
                                     ["train", "pipeline"], ["eval", "--checkpoint", "missing"]])
def test_threads_option_sets_the_torch_thread_count(command, capsys):
    main([*command, "--threads", "3"])   # the command may fail later (missing arguments): threads are set first
    assert torch.get_num_threads() == 3
    main([*command])
    assert torch.get_num_threads() == 1   # the default
    assert main([*command, "--threads", "0"]) == 2
    assert "--threads 0" in capsys.readouterr().err


def test_trainer_threads_config_field(toy_folder, tmp_path):
    config = config_from_dict({
        "kind": "vae", "model": {"dim": 8, "image_size": 16, "layers": 1, "use_vgg_and_gan": False},
        "data": {"source": "image_folder", "path": str(toy_folder), "image_size": 16, "batch_size": 4},
        "trainer": {"max_steps": 1, "threads": 2}, "tracker": {"console": False},
        "evaluation": {"validate_every": 0, "sample_every": 0},
        "checkpointing": {"directory": str(tmp_path / "vae")}})
    TrainingRun(config, show_progress=False)
    assert torch.get_num_threads() == 2


def test_embed_shards_also_writes_text_embeddings(tmp_path):
    from tests.data.shard_helpers import jpeg_bytes, write_shard

    clip = tiny_clip(tmp_path / "clip")
    samples = [{"__key__": f"0000{row:04d}", "jpg": jpeg_bytes((200, 30 * row, 30), (24, 24)),
                "txt": f"caption {row}".encode()} for row in range(3)]
    write_shard(tmp_path / "0000.tar", samples)
    assert main(["embed", str(tmp_path / "0000.tar"), "--clip", str(tmp_path / "clip"), "--out",
                 str(tmp_path / "emb")]) == 0
    texts = np.load(tmp_path / "emb" / "text_emb_0000.npy")
    expected = BuiltinClipAdapter(clip).eval().embed_text(tokenize(["caption 2"], context_length=8)).text_embed
    assert texts.shape == (3, 16) and np.allclose(texts[2], expected[0].detach().numpy(), atol=1e-5)
