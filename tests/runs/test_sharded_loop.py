"""The ``dalle2 train`` loop under FSDP, and the decoder's under DeepSpeed ZeRO-2 (2 CPU processes, gloo;
tests/runs/sharded_loop_worker.py sets accelerate's FSDP or DeepSpeed state by hand) with validation data that differs between the ranks: the decoder's img2dataset validation shards give
one rank batches of 4, 4 and 2 rows, the other of 4 and 1; the prior's clip-retrieval validation split is equal per
rank by construction, but NaN rows left out make rank 1's batches smaller.  Under FSDP every forward is a collective, so a rank that
evaluated a batch more than the other would wait forever; every rank evaluates as many batches as the shortest has,
the validation values are averaged over the ranks weighted by their rows, and sample grids are made by every rank
from the main process's batch.  The run validates, samples and saves at steps 4 and 8; a run killed at step 6 and
resumed ends bitwise equal to the uninterrupted one."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dalle2_pytorch.trainers.checkpoint import rebuild_model
from ..data.shard_helpers import img2dataset_key, write_clip_retrieval_output, write_img2dataset_shard
from .distributed import logged, train_two_processes

pytest.importorskip("pyarrow")
pytestmark = pytest.mark.slow

WORKER = "tests.runs.sharded_loop_worker"
STEPS, EVERY, KILL_AT = 8, 4, 6
TIMEOUT = 150                          # a hang is a failure, not a stuck test session


PRIOR_ROWS = 100           # clip-retrieval rows: 80 to train (40 per rank), 20 to validate (10 per rank)
PRIOR_NAN_ROWS = (94, 95, 96)   # in rank 1's validation share: its batches hold 4, 1 and 2 rows, rank 0's 4, 4, 2
VAL_ROWS = {"decoder": [5, 8], "prior": [7, 10]}   # the rows each rank validates on (sorted)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """For the decoder: training shards 0 and 1 (20 samples each: 5 batches per rank and epoch), validation shards 2
    and 3 (10 and 5 samples: batches of 4, 4, 2 and of 4, 1) and their clip-retrieval image embeddings (width 8).
    For the prior: a clip-retrieval output whose validation split (equal per rank) holds NaN rows on rank 1, which
    are left out of its batches."""
    root = tmp_path_factory.mktemp("sharded_loop")
    keys = []
    for shard, size in enumerate((20, 20, 10, 5)):
        keys += write_img2dataset_shard(root / "laion", shard, list(range(size)))
    write_clip_retrieval_output(root / "embeddings", keys)
    prior_keys = [img2dataset_key(0, index) for index in range(PRIOR_ROWS)]
    order = [prior_keys[i] for i in np.random.default_rng(0).permutation(PRIOR_ROWS)]   # the writer's row order
    poisoned = {order[row] for row in PRIOR_NAN_ROWS}

    def embedding(key):
        row = np.random.default_rng(int(key)).normal(size=8)
        return np.full(8, np.nan) if key in poisoned else row / np.linalg.norm(row)

    assert write_clip_retrieval_output(root / "prior_embeddings", prior_keys, embedding=embedding) == order
    return root


def run_config(kind: str, root, directory) -> dict:
    data = {
        "decoder": {"source": "webdataset", "urls": f"{root}/laion/{{00000..00001}}.tar",
                    "val_urls": f"{root}/laion/{{00002..00003}}.tar", "embeddings_url": f"{root}/embeddings/img_emb",
                    "shard_width": 5, "image_size": 16, "num_workers": 0, "shuffle_num": 0},
        "prior": {"source": "clip_retrieval", "path": str(root / "prior_embeddings"),
                  "splits": {"train": 0.8, "val": 0.2}},
    }
    models = {
        "decoder": {"unet": [{"dim": 8, "dim_mults": [1, 2], "image_embed_dim": 8, "num_resnet_blocks": 1,
                              "attn_heads": 1, "attn_dim_head": 8}],
                    "image_sizes": [16], "timesteps": 20, "learned_variance": False},
        "prior": {"net": {"dim": 8, "depth": 1, "dim_head": 8, "heads": 2, "max_text_len": 4}, "image_embed_dim": 8,
                  "timesteps": 20, "sample_timesteps": 4, "cond_drop_prob": 0.2,
                  "condition_on_text_encodings": False},
    }
    return {
        "kind": kind,
        "model": models[kind],
        "data": {**data[kind], "batch_size": 4},
        "trainer": {"epochs": 2, "max_steps": STEPS, "lr": 1e-3, "ema_beta": 0.9},
        "evaluation": {"validate_every": EVERY, "sample_every": EVERY, "validation_batches": 3, "num_samples": 2,
                       "sample_steps": 2},
        "tracker": {"console": False, "jsonl": True, "log_every": 1},
        "checkpointing": {"directory": str(directory), "save_every": EVERY},
    }


def has_deepspeed() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


@pytest.fixture(scope="module", params=["decoder-fsdp", "prior-fsdp", pytest.param(
    "decoder-zero2", marks=pytest.mark.skipif(not has_deepspeed(), reason="deepspeed not installed"))])
def straight(request, shards):
    """An uninterrupted run of each kind under FSDP (and the decoder's under ZeRO-2): (kind, run folder, worker
    output folder, sharding)."""
    kind, sharding = request.param.split("-")
    run, out = shards / f"{kind}_{sharding}_straight", shards / f"{kind}_{sharding}_out"
    result = train_two_processes(out, kind, run_config(kind, shards, run), timeout=TIMEOUT, worker=WORKER,
                                 environment={"SHARDING": sharding})
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.splitlines()[-1])["step"] == STEPS
    return kind, run, out, sharding


def test_uneven_validation_under_sharding_finishes_with_one_agreed_val_loss(straight):
    kind, run, out, _ = straight
    assert {"latest", "best", "logs"} <= {p.name for p in run.iterdir()}
    evaluations = [json.loads((out / f"eval{rank}.json").read_text()) for rank in (0, 1)]
    assert len(evaluations[0]) == len(evaluations[1]) == 2   # at steps 4 and 8
    logged_losses = [e["val_loss"] for e in logged(run) if "val_loss" in e]
    for at, (mine, theirs) in enumerate(zip(*evaluations)):
        assert mine["result"] == theirs["result"]            # every rank goes on with the very same values
        # the decoder's ranks evaluated 2 batches each (the shorter rank's count): 8 and 5 rows (which rank reads which
        # validation shard is the shard order's business); the prior's 3 each, of 10 and 7 rows
        assert sorted([mine["local"]["val_loss"][1], theirs["local"]["val_loss"][1]]) == VAL_ROWS[kind]
        assert mine["local"]["val_loss"][0] != theirs["local"]["val_loss"][0]
        (a, wa), (b, wb) = mine["local"]["val_loss"], theirs["local"]["val_loss"]
        assert mine["result"]["val_loss"] == (a * wa + b * wb) / (wa + wb) == logged_losses[at]
        assert not math.isclose(mine["result"]["val_loss"], (a + b) / 2)   # weighted by rows, not by rank
        if kind == "prior":
            assert "sample_cosine" in mine["result"]
    best = json.loads((run / "best" / "training_state.json").read_text())["counters"]
    assert best["best"] == min(logged_losses) and best["step"] == EVERY * (1 + logged_losses.index(best["best"]))
    if kind == "decoder":   # grids at steps 4 and 8, written once (by the main process)
        assert sorted(p.name for p in (run / "logs" / "images").iterdir()) == \
            [f"decoder_samples_{step:08d}.png" for step in (EVERY, STEPS)]


def test_the_sharded_run_checkpoint_loads_in_one_process(straight):
    kind, run, _, _ = straight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rebuild_model(run / "latest" / "trainer.safetensors")
    folder_model = type(model).from_pretrained(run / "latest" / "model")
    state = folder_model.state_dict()
    assert state.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert type(model).__name__ == {"decoder": "Decoder", "prior": "DiffusionPrior"}[kind]


def test_a_killed_sharded_run_resumes_bitwise_equal_to_the_uninterrupted_one(straight, shards):
    kind, run, _, sharding = straight
    name = f"{kind}_{sharding}"
    interrupted = run_config(kind, shards, shards / f"{name}_interrupted")
    killed = train_two_processes(shards / f"{name}_killed_out", kind, interrupted, kill_at=KILL_AT, timeout=TIMEOUT,
                                 worker=WORKER, environment={"SHARDING": sharding})
    assert killed.returncode != 0
    resumed = train_two_processes(shards / f"{name}_resumed_out", kind, interrupted, resume=True, timeout=TIMEOUT,
                                  worker=WORKER, environment={"SHARDING": sharding})
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert json.loads(resumed.stdout.splitlines()[-1])["step"] == STEPS
    final = [load_file(str(folder / "latest" / "trainer.safetensors"))
             for folder in (run, shards / f"{name}_interrupted")]
    assert final[0].keys() == final[1].keys() and any(k.startswith("rng.rank1.") for k in final[0])
    differing = [k for k in final[0] if not torch.equal(final[0][k], final[1][k])]
    assert differing == [], f"{len(differing)} of {len(final[0])} tensors differ, e.g. {differing[:5]}"
    reference = {e["step"]: e["val_loss"] for e in logged(run) if "val_loss" in e}
    assert {e["step"]: e["val_loss"] for e in logged(shards / f"{name}_interrupted") if "val_loss" in e} == reference
