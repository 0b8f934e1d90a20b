"""The two multi-machine launches docs/distributed.md shows, played on one machine: two node agents of one process
each, joined by torchrun's c10d rendezvous or by accelerate's ``--num_machines 2`` (static rendezvous), gloo on CPUs.
And the commonest multi-machine mistake, a checkpoint folder that is not shared (played by starting the two nodes in
different working folders with a relative ``checkpointing.directory``): every process stops at the start with one
error, instead of training into folders that ``--resume`` later finds missing on some machines."""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from safetensors import safe_open

from .distributed import ROOT, accelerate_command, kill_with_children, torchrun_command
from .test_accelerate_launch import tiny_clip

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_command(launcher: str, node: int, port: int) -> list[str]:
    if launcher == "torchrun":
        return torchrun_command() + ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                                     "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "two-nodes"]
    return accelerate_command() + ["--multi_gpu", "--num_machines", "2", "--machine_rank", str(node),
                                   "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                                   "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no"]


def train_on_two_nodes(out: Path, configs: tuple[dict, dict], launcher: str, folders: tuple[Path, Path]) -> list:
    """``dalle2 train clip`` started by two node launchers at once, node i in ``folders[i]`` with the config file
    ``folders[i]/clip.json`` holding ``configs[i]``; their results."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    port = free_port()
    nodes = []
    for node, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "clip.json").write_text(json.dumps(configs[node]))
        command = node_command(launcher, node, port) + ["-m", "tests.runs.multiprocess_worker", str(out), "train",
                                                        "clip", "--config", "clip.json"]
        nodes.append(subprocess.Popen(command, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    try:
        for node in nodes:
            stdout, stderr = node.communicate(timeout=240)
            results.append(subprocess.CompletedProcess(node.args, node.returncode, stdout, stderr))
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_with_children(node.pid)
    return results


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_nodes_share_the_data_and_write_one_checkpoint(tmp_path, launcher):
    config = tiny_clip(tmp_path / "run")
    results = train_on_two_nodes(tmp_path, (config, config), launcher, (tmp_path, tmp_path))
    assert [r.returncode for r in results] == [0, 0], "\n".join(r.stderr[-3000:] for r in results)
    summaries = [json.loads(line) for r in results for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["step"] == 4 and summaries[0]["samples_seen"] == 32
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 16 and sorted(seen[0] + seen[1]) == list(range(8, 40))
    with safe_open(str(tmp_path / "run" / "latest" / "trainer.safetensors"), "pt") as saved:
        assert json.loads(saved.metadata()["dalle2_pytorch_training_state"])["rng_world_size"] == 2


def test_a_checkpoint_folder_each_node_has_for_itself_stops_every_process_at_the_start(tmp_path):
    config = tiny_clip(Path("run"))            # relative: a folder of its own under each node's working folder
    results = train_on_two_nodes(tmp_path / "out", (config, config), "torchrun", (tmp_path / "node0", tmp_path / "node1"))
    assert all(r.returncode != 0 for r in results)
    for result in results:
        assert "checkpointing.directory 'run' is not one folder shared by every process" in result.stderr
        assert "process 1 on" in result.stderr and "process 0 on" not in result.stderr
    assert not any((tmp_path / node / "run" / "latest").exists() for node in ("node0", "node1"))


def test_nodes_with_different_configs_stop_at_the_start_naming_the_differences(tmp_path):
    """Each machine reads its own copy of the config file; a stale copy would build another model (and hang in the
    first collective, or train two models): every process stops with the differences.  Tracker settings may differ."""
    config = tiny_clip(tmp_path / "run")
    stale = json.loads(json.dumps(config))
    stale["model"]["dim_latent"] = 16
    stale["trainer"]["lr"] = 1e-2
    stale["tracker"] = {"console": True}
    results = train_on_two_nodes(tmp_path / "out", (config, stale), "torchrun", (tmp_path / "node0", tmp_path / "node1"))
    assert all(r.returncode != 0 for r in results)
    for result in results:
        said = result.stderr
        assert "the processes do not train from the same config" in said, said[-3000:]
        assert ("model.dim_latent: 8 on process 0, 16 on process 1" in said
                or "model.dim_latent: 16 on process 0, 8 on process 1" in said)
        assert "trainer.lr" in said and "tracker" not in said.split("the processes do not train")[1]
    assert not (tmp_path / "run" / "latest").exists()
