"""Each kind of config-driven run trains, validates, logs and checkpoints: a prior on clip-retrieval embeddings,
a VQGAN-VAE and a CLIP-conditioned decoder on the toy set (a few steps each, tiny models)."""

import json

import numpy as np
import pytest
import torch

from dalle2_pytorch.runs.configs import config_from_dict
from dalle2_pytorch.runs.loop import TrainingRun

QUIET = {"console": False}


def metrics(directory):
    return [json.loads(line) for line in (directory / "logs" / "metrics.jsonl").read_text().splitlines()]


def test_prior_learns_on_clip_retrieval_embeddings(tmp_path):
    rng = np.random.default_rng(0)
    text = rng.normal(size=(512, 8)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image = np.roll(text, 1, axis=1)  # a fixed map text -> image
    for name, array in (("img_emb", image), ("text_emb", text)):
        (tmp_path / "emb" / name).mkdir(parents=True)
        np.save(tmp_path / "emb" / name / f"{name}_0.npy", array)
    config = config_from_dict({
        "kind": "prior",
        "model": {"net": {"dim": 8, "depth": 1, "dim_head": 8, "heads": 2, "max_text_len": 4},
                  "image_embed_dim": 8, "timesteps": 50, "sample_timesteps": 8, "cond_drop_prob": 0.1,
                  "condition_on_text_encodings": False},
        "data": {"source": "clip_retrieval", "path": str(tmp_path / "emb"),
                 "splits": {"train": 0.875, "val": 0.125}, "batch_size": 64},
        "trainer": {"epochs": 12, "lr": 3e-3},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1, "sample_steps": 8},
        "tracker": QUIET,
        "checkpointing": {"directory": str(tmp_path / "run"), "save_every": 1000, "best_metric": "sample_cosine",
                          "best_mode": "max"},
    })
    torch.manual_seed(0)
    summary = TrainingRun(config, show_progress=False).run()
    assert summary["step"] == 12 * 7
    assert summary["sample_cosine"] > 0.6, summary
    # the prior guide's metrics are logged beside it: the prior must beat the unrelated-caption baseline
    assert summary["prior_similarity_with_image"] == summary["sample_cosine"]
    assert summary["prior_similarity_with_unrelated_caption"] < summary["prior_similarity_with_text"], summary
    assert (tmp_path / "run" / "best" / "model" / "config.json").is_file()


def test_vae_trains_and_logs_reconstructions(tmp_path):
    config = config_from_dict({
        "kind": "vae",
        "model": {"dim": 8, "image_size": 16, "layers": 1, "vq_codebook_dim": 4, "vq_codebook_size": 16,
                  "use_vgg_and_gan": False, "attn_heads": 1, "attn_dim_head": 8},
        "data": {"source": "toy", "num_samples": 40, "image_size": 16, "val_fraction": 0.2, "batch_size": 8},
        "trainer": {"epochs": 1, "lr": 3e-3},
        "evaluation": {"validate_every": 2, "validation_batches": 1, "sample_every": 4, "num_samples": 2},
        "tracker": QUIET,
        "checkpointing": {"directory": str(tmp_path / "vae"), "save_every": 2},
    })
    torch.manual_seed(0)
    run = TrainingRun(config, show_progress=False)
    untrained = run.evaluate()["val_loss"]  # fixed validation noise, so the losses compare
    summary = run.run()
    assert summary["step"] == 4 and summary["val_loss"] < 0.9 * untrained, (untrained, summary)
    logged = metrics(tmp_path / "vae")
    assert any(entry.get("image") == "vae_samples" for entry in logged)
    assert sum("val_loss" in entry for entry in logged) == 2


@pytest.mark.slow
def test_clip_conditioned_decoder_reports_faithfulness(tmp_path, monkeypatch):
    """The reported faithfulness is the pixel judge's verdict on the run's own samples of held-out captions."""
    import dalle2_pytorch.data as data
    from dalle2_pytorch.clip.model import CLIP

    judged = []
    judge = data.faithfulness

    def recording_judge(images, captions, **kwargs):
        score = judge(images, captions, **kwargs)
        judged.append((images.clone(), list(captions), score))
        return score

    monkeypatch.setattr(data, "faithfulness", recording_judge)

    clip = CLIP(dim_text=16, dim_image=16, dim_latent=8, text_seq_len=8, text_enc_depth=1, text_heads=2,
                text_dim_head=8, visual_enc_depth=1, visual_heads=2, visual_dim_head=8, visual_image_size=16,
                visual_patch_size=8, visual_patch_dropout=0.0)
    clip.save_pretrained(tmp_path / "clip")
    config = config_from_dict({
        "kind": "decoder",
        "model": {"unet": [{"dim": 8, "dim_mults": [1, 2], "image_embed_dim": 8, "num_resnet_blocks": 1,
                             "attn_heads": 1, "attn_dim_head": 8},
                            {"dim": 8, "dim_mults": [1, 2], "num_resnet_blocks": 1, "attn_heads": 1,
                             "attn_dim_head": 8}],
                  "image_sizes": [8, 16], "clip": {"kind": "builtin", "path": str(tmp_path / "clip")},
                  "timesteps": 20, "learned_variance": False},
        "data": {"source": "toy", "num_samples": 40, "image_size": 16, "val_fraction": 0.2, "batch_size": 8},
        "trainer": {"epochs": 1, "lr": 1e-3, "unet_numbers": [1, 2], "ema_beta": 0.9},
        "evaluation": {"validate_every": 4, "validation_batches": 1, "sample_every": 4, "num_samples": 4,
                       "sampler": "ddim", "sample_steps": 3},
        "tracker": QUIET,
        "checkpointing": {"directory": str(tmp_path / "decoder"), "save_every": 4},
    })
    summary = TrainingRun(config, show_progress=False).run()
    assert summary["step"] == 4
    images, captions, score = judged[-1]
    assert summary["faithfulness"] == score
    assert images.shape == (4, 3, 16, 16) and len(captions) == 4 and all(" " in c for c in captions)
    assert score == judge(images, captions, attributes=("colour", "shape"))
    logged = metrics(tmp_path / "decoder")
    assert [entry["unet"] for entry in logged if "unet" in entry] == []  # log_every 10 > 4 steps: none
    assert any(entry.get("image") == "decoder_samples" for entry in logged)


def test_decoder_trains_on_webdataset_shards_with_external_embeddings(tmp_path):
    from tests.data.shard_helpers import build_img2dataset_shards, row_embedding

    shards, embeddings = build_img2dataset_shards(tmp_path, shards=2, rows=list(range(8)), dim=8)
    config = config_from_dict({
        "kind": "decoder",
        "model": {"unet": [{"dim": 8, "dim_mults": [1, 2], "image_embed_dim": 8, "num_resnet_blocks": 1,
                             "attn_heads": 1, "attn_dim_head": 8}],
                  "image_sizes": [16], "timesteps": 20, "learned_variance": False},
        "data": {"source": "webdataset", "urls": str(shards / "{0000..0001}.tar"),
                 "val_urls": str(shards / "0001.tar"), "embeddings_url": str(embeddings), "image_size": 16,
                 "batch_size": 4, "num_workers": 0, "shuffle_num": 0},
        "trainer": {"epochs": 2, "lr": 1e-3},
        "evaluation": {"validate_every": 0, "sample_every": 0, "validation_batches": 1, "num_samples": 2,
                       "sample_steps": 2},
        "tracker": QUIET,
        "checkpointing": {"directory": str(tmp_path / "run"), "save_every": 100},
    })
    seen, pairs = [], []

    def record(step, batch):
        seen.append(batch["captions"])
        pairs.extend(zip(batch["captions"], batch["image_embed"]))

    run = TrainingRun(config, show_progress=False, on_batch=record)
    summary = run.run()
    # every image trained on carries the external embedding of its own key (shard, row)
    assert len(pairs) == 32 and all(torch.equal(embed, torch.from_numpy(row_embedding(int(key[:4]), int(key[4:]))))
                                    for key, embed in pairs)
    assert summary["step"] == 8 and summary["epoch"] == 2 and np.isfinite(summary["val_loss"])
    assert sorted(c for batch in seen[:4] for c in batch) == sorted(f"{s:04d}{r:04d}" for s in (0, 1)
                                                                   for r in range(8))


def test_prior_on_embeddings_of_another_width_fails_at_start_naming_the_file(tmp_path):
    for name in ("img_emb", "text_emb"):
        (tmp_path / "emb" / name).mkdir(parents=True)
        np.save(tmp_path / "emb" / name / f"{name}_0.npy", np.ones((64, 16), np.float32))
    config = config_from_dict({
        "kind": "prior",
        "model": {"net": {"dim": 8, "depth": 1, "dim_head": 8, "heads": 2, "max_text_len": 4},
                  "image_embed_dim": 8, "timesteps": 50, "condition_on_text_encodings": False},
        "data": {"source": "clip_retrieval", "path": str(tmp_path / "emb"), "batch_size": 8},
        "tracker": QUIET,
        "checkpointing": {"directory": str(tmp_path / "run")},
    })
    with pytest.raises(ValueError, match=r"img_emb_0\.npy has rows of width 16 .*the model's embed_dim"):
        TrainingRun(config, show_progress=False)
