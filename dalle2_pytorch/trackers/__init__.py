"""Where training runs report to: console (always), a local JSONL log, TensorBoard and W&B (optional extras),
and savers that copy checkpoints to a folder or the Hugging Face Hub."""

from dalle2_pytorch.trackers.base import ConsoleTracker, JsonlTracker, Tracker, TrackerGroup
from dalle2_pytorch.trackers.optional import TensorBoardTracker, WandbTracker
from dalle2_pytorch.trackers.savers import HuggingFaceSaver, LocalSaver

__all__ = ["Tracker", "ConsoleTracker", "JsonlTracker", "TrackerGroup", "TensorBoardTracker", "WandbTracker",
           "LocalSaver", "HuggingFaceSaver"]
