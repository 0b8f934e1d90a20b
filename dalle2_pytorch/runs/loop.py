"""The config-driven training loop shared by CLIP, prior, decoder and VAE runs.

Train on the data section's batches; every ``evaluation.validate_every`` steps compute the validation loss and the
kind's metrics; every ``sample_every`` steps log a sample grid; every ``checkpointing.save_every`` steps (and at the
end) save ``latest``, and ``best`` when the chosen metric improved.  ``resume=True`` continues from ``latest``
exactly: same step count, and the rest of the interrupted epoch holds only samples not yet trained on.
Works unchanged under ``accelerate launch`` (each process reads its own share of the data).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from tqdm.auto import tqdm

from dalle2_pytorch.atomic import recover_interrupted_swap
from dalle2_pytorch.trackers import ConsoleTracker, JsonlTracker, LocalSaver, Tracker, TrackerGroup
from dalle2_pytorch.runs.data_sources import build_source
from dalle2_pytorch.runs.agreement import agreed, mean_over_ranks
from dalle2_pytorch.runs.launch_check import check_launch, check_same_config, check_shared_folder
from dalle2_pytorch.runs.resume_check import report_config_changes
from dalle2_pytorch.runs.stop_signals import StopSignals, exit_code
from dalle2_pytorch.runs.tasks import build_task
from dalle2_pytorch.trainers.checkpoint import load_checkpoint, read_counters, read_run_config, save_checkpoint


def build_trackers(config, directory: Path, is_main: bool) -> Tracker:
    section = config.tracker
    trackers: list[Tracker] = []
    if not is_main:
        return TrackerGroup([])
    if section.console:
        trackers.append(ConsoleTracker(every=1))
    if section.jsonl:
        trackers.append(JsonlTracker(directory / "logs"))
    if section.tensorboard:
        from dalle2_pytorch.trackers import TensorBoardTracker

        trackers.append(TensorBoardTracker(directory / "tensorboard"))
    if section.wandb is not None:
        from dalle2_pytorch.trackers import WandbTracker

        w = section.wandb
        trackers.append(WandbTracker(project=w.project, run_name=w.run_name, entity=w.entity,
                                     mode=wandb_mode(w.mode), directory=directory,
                                     run_id_file=directory / "logs" / "wandb_run_id"))
    return TrackerGroup(trackers)


def wandb_mode(configured: str) -> str:
    """The W&B mode: the environment's ``WANDB_MODE`` when set (so a shipped ``online`` config can be run offline
    without editing it), else the config's."""
    value = os.environ.get("WANDB_MODE", "").strip().lower()
    if not value:
        return configured
    value = {"dryrun": "offline", "run": "online"}.get(value, value)
    if value not in ("online", "offline", "disabled"):
        raise ValueError(f"WANDB_MODE={os.environ['WANDB_MODE']!r}: choose online, offline or disabled")
    if value != configured:
        print(f"tracker.wandb.mode={configured!r} overridden by WANDB_MODE={value!r}")
    return value


class MetricWindow:
    """Training metrics since the last log line: each numeric key's mean over those steps and over every process
    (one ``all_reduce``, so all processes must call :meth:`mean` at the same steps)."""

    def __init__(self, accelerator) -> None:
        self.accelerator = accelerator
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.sums[key] = self.sums.get(key, 0.0) + float(value)
                self.counts[key] = self.counts.get(key, 0) + 1

    def mean(self) -> dict[str, float]:
        keys = sorted(self.sums)
        totals = torch.tensor([[self.sums[k] for k in keys], [float(self.counts[k]) for k in keys]],
                              dtype=torch.float64, device=self.accelerator.device)
        if self.accelerator.num_processes > 1 and keys:
            totals = self.accelerator.reduce(totals, reduction="sum")
        self.sums, self.counts = {}, {}
        return {key: float(total / count) for key, total, count in zip(keys, totals[0].tolist(), totals[1].tolist())}


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _rows(batch: dict[str, Any]) -> int:
    return len(next(v for v in batch.values() if isinstance(v, (torch.Tensor, list))))


class TrainingRun:
    """One training run from a validated config (see :mod:`dalle2_pytorch.runs.configs`)."""

    def __init__(self, config, *, resume: bool = False, show_progress: bool = True,
                 on_batch: Optional[Callable[[int, dict], None]] = None) -> None:
        from accelerate import Accelerator

        self.config = config
        self.accelerator = Accelerator()
        check_launch(self.accelerator.num_processes, distributed_type=self.accelerator.distributed_type.name)
        self.directory = Path(config.checkpointing.directory)
        check_shared_folder(self.directory, self.accelerator)
        check_same_config(config.model_dump(mode="json"), self.accelerator)
        self.show_progress = show_progress and self.accelerator.is_main_process
        self.on_batch = on_batch
        self._said_no_validation = False
        if config.trainer.threads is not None:
            torch.set_num_threads(config.trainer.threads)
        torch.manual_seed(config.trainer.seed)  # the same initial weights in every process
        model = config.model.create()
        self.task = build_task(config, model)
        torch.manual_seed(config.trainer.seed + self.accelerator.process_index)
        self.source = build_source(config.data, self.accelerator.process_index, self.accelerator.num_processes,
                                   embed_dim=self.task.embed_dim(model))
        # the library's trainers (CLIP and VAE: their shared core) own the optimisers, EMA, stepping and precision
        self.trainer = self.task.make_trainer(model, self.accelerator, self._total_steps())
        self.model = self.trainer.model
        if config.trainer.compile:  # after the trainer made its EMA copies, which stay eager
            self.trainer.compile(config.trainer.compile)

        self.counters = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "samples_seen": 0, "best": None}
        self.config_record = config.model_dump(mode="json")
        latest = self.directory / "latest"
        # a save killed between its two renames left `.<name>.old`: put every checkpoint folder back first
        for folder in [self.directory / "best"] + [Path(config.checkpointing.copy_to) / name
                                                   for name in ("latest", "best") if config.checkpointing.copy_to]:
            recover_interrupted_swap(folder)
        if resume:
            if read_counters(latest) is None:
                raise ValueError(f"--resume: no checkpoint to resume from at {latest}")
            changes = report_config_changes(read_run_config(latest), self.config_record, latest)
            self.counters = load_checkpoint(latest, self.trainer)
        elif read_counters(latest) is not None:
            raise ValueError(f"{latest} already holds a checkpoint: pass --resume to continue it, or choose another "
                             "checkpointing.directory")
        self.tracker = build_trackers(config, self.directory, self.accelerator.is_main_process)
        if resume:
            self.tracker.resumed(self.counters["step"], changes)
        self.savers = []
        if config.checkpointing.copy_to:
            self.savers.append(LocalSaver(config.checkpointing.copy_to))
        if config.checkpointing.hf_repo:
            from dalle2_pytorch.trackers import HuggingFaceSaver

            self.savers.append(HuggingFaceSaver(config.checkpointing.hf_repo))

    # ------------------------------------------------------------------ helpers
    def _total_steps(self) -> Optional[int]:
        per_epoch = self.source.num_batches()
        total = per_epoch * self.config.trainer.epochs if per_epoch is not None else None
        limits = [t for t in (total, self.config.trainer.max_steps, self.task.total_steps())
                  if t is not None]
        return min(limits) if limits else None

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss and the kind's metrics on held-out batches (fixed noise, so values compare).

        With several processes every one evaluates as many batches as the one with the fewest (a validation split of
        shards can be uneven, and under FSDP each forward is a collective), and the values are averaged over the
        processes, weighted by the validation rows each used: every process gets the same numbers, so ``best/``
        decisions agree."""
        evaluation = self.config.evaluation
        model = self.model
        model.eval()
        losses, batches = [], []
        with torch.random.fork_rng(devices=[]), self.trainer.ema_weights():
            torch.manual_seed(1234)
            val_batches = agreed(self.source.val_batches(evaluation.validation_batches), self.accelerator)
            for i, batch in enumerate(val_batches):
                batch = _to_device(batch, self.accelerator.device)
                losses.append((self.task.loss(model, batch, i).item(), _rows(batch)))
                batches.append(batch)
            metrics = self.task.validation_metrics(model, batches, torch.Generator().manual_seed(0)) if batches else {}
        model.train()
        rows = float(sum(n for _, n in losses))
        local = {key: (float(value), rows) for key, value in metrics.items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool)}
        if rows:
            local["val_loss"] = (sum(loss * n for loss, n in losses) / rows, rows)
        return mean_over_ranks(local, self.accelerator)

    def _warn_no_validation(self) -> None:
        """Said once, by the main process, when a validation step found no batch to evaluate."""
        if self.accelerator.is_main_process and not self._said_no_validation:
            self._said_no_validation = True
            processes = self.accelerator.num_processes
            where = "" if processes == 1 else f" on at least one of the {processes} processes"
            warnings.warn(f"evaluation.validate_every={self.config.evaluation.validate_every} but the validation data "
                          f"gave no batch{where}: no val_loss is logged and no best/ checkpoint is written. Give "
                          "every process validation data (the data section's validation split: val_urls with at least "
                          "as many shards as processes, splits, val_fraction) or set validate_every to 0",
                          RuntimeWarning, stacklevel=2)

    def _sharded(self) -> bool:
        return any(part.sharded for part in self.trainer.parts.values())   # FSDP: sampling forwards are collectives

    def _sample_batch(self) -> Optional[dict[str, Any]]:
        """The validation batch a sample grid is made from, on the processes that sample: the main process alone
        (the others skip sampling), or under FSDP, where every sampling forward is a collective, every process with
        the main process's batch (so all run the very same forwards)."""
        main = self.accelerator.is_main_process
        batch = next(iter(self.source.val_batches(1)), None) if main else None
        if self.accelerator.num_processes == 1 or not self._sharded():
            return batch
        from accelerate.utils import broadcast_object_list

        holder = [batch]
        broadcast_object_list(holder, from_process=0)
        return holder[0]

    @torch.no_grad()
    def log_samples(self) -> None:
        batch = self._sample_batch()
        if batch is None:
            return
        self.model.eval()
        # sampling must not shift the training run's random stream
        with torch.random.fork_rng(devices=[]), self.trainer.ema_weights():
            made = self.task.samples(self.model, _to_device(batch, self.accelerator.device),
                                     torch.Generator().manual_seed(0))
        self.model.train()
        if made is not None and self.accelerator.is_main_process:
            images, captions = made
            self.tracker.log_images(f"{self.config.kind}_samples", images.cpu(), captions, self.counters["step"])

    def _improved(self, metrics: Optional[dict[str, float]]) -> bool:
        """Whether ``metrics`` beat the best value so far of ``checkpointing.best_metric`` (then it becomes the best)."""
        counters, section = self.counters, self.config.checkpointing
        value = (metrics or {}).get(section.best_metric)
        improved = value is not None and (counters["best"] is None or
                                          (value < counters["best"] if section.best_mode == "min"
                                           else value > counters["best"]))
        if improved:
            counters["best"] = value
        return improved

    def save_best(self, metrics: dict[str, float]) -> None:
        """At a validation step that is not a save step: write ``best`` when the metric improved."""
        if self._improved(metrics):
            self._upload([("best", save_checkpoint(self.directory / "best", self.trainer, dict(self.counters),
                                                   False, run_config=self.config_record))])

    def save(self, metrics: Optional[dict[str, float]] = None) -> None:
        counters = self.counters
        improved = self._improved(metrics)
        saved = []
        if improved:  # best first: killed before latest follows, the resumed run redoes this step and saves it again
            saved.append(("best", save_checkpoint(self.directory / "best", self.trainer, dict(counters), False,
                                                  run_config=self.config_record)))
        saved.insert(0, ("latest", save_checkpoint(self.directory / "latest", self.trainer, dict(counters),
                                                   run_config=self.config_record)))
        self._upload(saved)

    def _upload(self, saved: list) -> None:
        for saver in self.savers if self.accelerator.is_main_process else []:
            for name, path in saved:
                saver.save(path, name)

    def _agreed(self, batches) -> Any:
        """The batches of an epoch whose length is not known in advance (a stream of shards), for as long as every
        process still has one (:func:`agreed`); what the longer ranks had left of the epoch is not trained on."""
        if self.source.num_batches() is not None:
            return iter(batches)
        return agreed(batches, self.accelerator)

    def _learning_rate(self) -> float:
        return next(iter(self.trainer.parts.values())).optimizer.param_groups[0]["lr"]

    def _stopped_summary(self, signal_name: str, started: float) -> dict[str, Any]:
        """What :meth:`run` returns when a stop signal ended it: the step it saved ``latest`` at, the signal and the
        exit status the command gives (128 + the signal's number)."""
        step = self.counters["step"]
        if self.accelerator.is_main_process:
            print(f"received {signal_name}: stopped after step {step} with its checkpoint in "
                  f"{self.directory / 'latest'}; continue with --resume", flush=True)
        return {**self._summary(started), "stopped_by": signal_name, "exit_code": exit_code(signal_name)}

    def _summary(self, started: float) -> dict[str, Any]:
        """Where the run stands, as :meth:`run` returns (and ``dalle2 train`` prints) it."""
        counters = self.counters
        return {"step": counters["step"], "epoch": counters["epoch"], "samples_seen": counters["samples_seen"],
                "seconds": round(time.perf_counter() - started, 1), "checkpoint": str(self.directory / "latest")}

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        config, counters = self.config, self.counters
        evaluation, every_save = config.evaluation, config.checkpointing.save_every
        total, per_epoch = self._total_steps(), self.source.num_batches()
        self.tracker.log_config(config.model_dump(mode="json"))
        bar = tqdm(total=total, initial=counters["step"], desc=f"train {config.kind}", unit="step",
                   disable=not self.show_progress, dynamic_ncols=True)
        last_metrics: dict[str, float] = {}
        window = MetricWindow(self.accelerator)
        evaluated_at = sampled_at = -1
        started = time.perf_counter()
        self.model.train()
        done = total is not None and counters["step"] >= total
        start_step, epochs_started = counters["step"], 0
        stopped_by = None
        with StopSignals() as signals:
            while not done and counters["epoch"] < config.trainer.epochs:
                epochs_started += 1
                epoch = counters["epoch"]
                batches = self.source.epoch_batches(counters["epoch"], skip=counters["batch_in_epoch"])
                for batch in self._agreed(batches):
                    if self.on_batch is not None:
                        self.on_batch(counters["step"], batch)
                    batch = _to_device(batch, self.accelerator.device)
                    metrics = self.task.train_step(self.trainer, batch, counters["step"])
                    window.add(metrics)
                    counters["step"] += 1
                    counters["batch_in_epoch"] += 1
                    counters["samples_seen"] += _rows(batch) * self.accelerator.num_processes
                    if per_epoch is not None and counters["batch_in_epoch"] >= per_epoch:
                        counters["epoch"] += 1
                        counters["batch_in_epoch"] = 0
                    step = counters["step"]
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", epoch=counters["epoch"])
                    if step % config.tracker.log_every == 0:
                        self.tracker.log({**window.mean(), "epoch": counters["epoch"],
                                          "samples": counters["samples_seen"], "lr": self._learning_rate()}, step)
                    evaluated = None
                    if evaluation.validate_every and step % evaluation.validate_every == 0:
                        evaluated = last_metrics = self.evaluate()
                        evaluated_at = step
                        self.tracker.log(evaluated, step)
                        if "val_loss" not in evaluated:
                            self._warn_no_validation()
                    if evaluation.sample_every and step % evaluation.sample_every == 0:
                        self.log_samples()
                        sampled_at = step
                    if step % every_save == 0:
                        self.save(evaluated)
                    elif evaluated:   # the best validated model is kept even between save steps
                        self.save_best(evaluated)
                    stopped_by = signals.agreed(self.accelerator)
                    if stopped_by is not None:   # preempted: keep this step's progress, then stop
                        if step % every_save != 0:
                            self.save()
                        done = True
                        break
                    if total is not None and step >= total:
                        done = True
                        break
                else:
                    # the epoch's data ran out: a stream without a known length ends its epoch here, and so does a
                    # source that yielded fewer batches than it announced (never loop on an empty epoch)
                    if counters["epoch"] == epoch:
                        counters["epoch"] += 1
                        counters["batch_in_epoch"] = 0
        bar.close()
        if stopped_by is not None:
            self.tracker.close()
            return self._stopped_summary(stopped_by, started)
        if counters["step"] == start_step and epochs_started:
            raise RuntimeError(f"the {config.kind} run trained 0 steps: its data yielded no batch; check the data "
                               f"settings {config.data.model_dump(mode='json')} (paths, shard patterns, batch size "
                               "larger than the data set with drop_last)")
        final = last_metrics
        if evaluated_at != counters["step"]:
            final = self.evaluate()
            if final:
                self.tracker.log(final, counters["step"])
                last_metrics = final
        if sampled_at != counters["step"] and evaluation.sample_every:
            self.log_samples()
        self.save(final)
        self.tracker.close()
        return {**self._summary(started),
                **{k: v for k, v in last_metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}}
