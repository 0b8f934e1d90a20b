"""Savers: after each checkpoint, copy it somewhere else (a local folder, or a Hugging Face Hub repository)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dalle2_pytorch.atomic import atomic_folder


class LocalSaver:
    """Copies a checkpoint folder to ``<directory>/<name>`` (replacing the previous copy of that name)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def save(self, checkpoint: str | os.PathLike, name: str) -> Path:
        target = self.directory / name
        with atomic_folder(target) as staging:
            shutil.copytree(checkpoint, staging, dirs_exist_ok=True)
        return target


class HuggingFaceSaver:
    """Uploads a checkpoint folder to ``repo_id`` under ``<name>/`` (needs ``huggingface_hub`` and a login)."""

    def __init__(self, repo_id: str, *, private: bool = True) -> None:
        try:
            import huggingface_hub
        except ImportError as error:
            raise ImportError("the huggingface saver needs `huggingface_hub`: pip install huggingface_hub") from error
        self.api = huggingface_hub.HfApi()
        self.repo_id = repo_id
        self.api.create_repo(repo_id, private=private, exist_ok=True)

    def save(self, checkpoint: str | os.PathLike, name: str) -> str:
        self.api.upload_folder(folder_path=str(checkpoint), path_in_repo=name, repo_id=self.repo_id)
        return f"{self.repo_id}/{name}"
