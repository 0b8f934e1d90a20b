"""Two CPU processes (gloo): training one unet of a cascade keeps every process's weights identical."""


import pytest

from tests.runs.distributed import run_worker_module
from tests.trainers.checkpoint_worker import make_trainers



@pytest.mark.slow
def test_two_processes_average_gradients_of_the_trained_unet(tmp_path):
    run_worker_module("tests.trainers.ddp_worker", tmp_path, "DDP_OK", timeout=240)
    decoder, _ = make_trainers()
    decoder.load(tmp_path / "ddp.safetensors", only_model=True)  # written once, by the main process
