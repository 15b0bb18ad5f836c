"""The training loop: one function, ``train(cfg, run_dir, resume)``, used by the CLI,
by ``torchrun`` (DistributedDataParallel, rank 0 writes the run directory) and,
through a subprocess, by the dashboard.

One trainer per run directory: rank 0 holds ``RUN_DIR/train.lock`` (``rundir.hold_run_lock``)
from before its first write to after its last; while another process holds it, ``train`` raises
``RunLocked`` (naming that process's pid) and writes nothing.

Faults: SIGTERM/SIGINT -> checkpoint + status 'stopped'; a NaN/inf loss ->
status 'failed' with the last good checkpoint kept; any exception -> 'failed'
with its message. ``resume`` continues from ``checkpoints/last.pt``: weights, optimizer,
schedule, the best validation score so far, and each rank's own RNG state (a checkpoint
holds one per rank, so after a resume the ranks keep distinct random streams).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from flrdf.config import Config, dump_config
from flrdf.data.synthetic_overlap import generator_record
from flrdf.engine import distributed
from flrdf.engine.checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from flrdf.engine.evaluate import evaluate
from flrdf.engine.loaders import build_loaders
from flrdf.engine.optim import build_optimizer
from flrdf.engine.refine_choice import resolve
from flrdf.engine.rundir import RunDir, RunLocked, hold_run_lock, now_iso, release_run_lock
from flrdf.engine.step import precision_for, resolve_device, train_step
from flrdf.model import FLRDF

log = logging.getLogger("flrdf.train")


class TrainingFailed(RuntimeError):
    pass


class _StopFlag:
    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signum

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _setup_logging(run: RunDir | None, rank: int) -> None:
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    log.addHandler(console)
    if run is not None and rank == 0:
        fh = logging.FileHandler(run.log)
        fh.setFormatter(fmt)
        log.addHandler(fh)
    logging.getLogger("flrdf.backbone").handlers = log.handlers  # backbone init warnings into log.txt


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str):
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def _seed_everything(seed: int, deterministic: bool) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict:
    """Run (or continue) a training job writing ``run_dir``. Returns the final status dict."""
    try:
        device, device_error = resolve_device(cfg.runtime.device), None
    except RuntimeError as exc:  # reported through status.json below, like any other failure
        device, device_error = torch.device("cpu"), exc
    # the device first: under NCCL each rank must own its GPU before the first collective (the barrier)
    rank, world, _, device = distributed.setup(device)
    ddp = distributed.active()  # also a 1-process torchrun: the same collectives as a multi-GPU run
    is_main = rank == 0
    run = RunDir(run_dir)
    lock, refused = None, None
    if is_main:  # rank 0 alone holds the run's lock: one trainer (one process group) per run directory
        run.create()
        try:
            lock = hold_run_lock(run.path)
        except (RunLocked, OSError) as exc:  # held by another trainer; or not a file we may lock
            refused = exc
    if ddp:  # also the barrier: past it the run directory exists; every rank learns rank 0's verdict
        verdict = distributed.all_gather_objects(None if refused is None else (getattr(refused, "pid", None),
                                                                              str(refused)))[0]
        if verdict is not None and refused is None:
            refused = RunLocked(run.path, verdict[0]) if verdict[0] is not None else OSError(verdict[1])
    if refused is not None:  # before any write: the running trainer's files stay as they are
        if dist.is_initialized():
            dist.destroy_process_group()
        raise refused
    _setup_logging(run, rank)
    stop = _StopFlag()
    stop.install()
    status = {}
    try:
        if is_main:
            started = (run.status() or {}).get("started") if resume else None
            run.update_status(state="running", pid=os.getpid(), host=socket.gethostname(), started=started or now_iso(),
                              error=None, config=cfg.name, dataset=cfg.data.dataset, world_size=world,
                              backend=dist.get_backend() if ddp else None)
            run.config.write_text(dump_config(cfg))
        if device_error is not None:
            raise device_error
        status = _train(cfg, run, resume, rank, world, device, stop)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        log.error("training failed: %s\n%s", message, traceback.format_exc())
        status = {"state": "failed", "error": message}
    finally:
        stop.restore()
        run.close_mirrors()
        if is_main and status:
            status = run.update_status(**status)
        if lock is not None:
            release_run_lock(lock)  # releases train.lock (after the final status: a Resume waiting on it reads that)
        if dist.is_initialized():
            dist.destroy_process_group()
    return status


def _rank_rng(seed: int, rank: int, epoch: int, step: int) -> None:
    """A rank's RNG when its own state was not saved (older checkpoint, other world size): derived from
    (seed, rank, epoch, step), so ranks differ and a rerun of the same resume repeats."""
    _seed_everything(((seed * 1_000_003 + rank) * 1_000_003 + epoch) * 1_000_003 + step, False)


def _train(cfg: Config, run: RunDir, resume: bool, rank: int, world: int, device: torch.device,
           stop: _StopFlag) -> dict:
    is_main = rank == 0
    ddp = distributed.active()
    prec = precision_for(device, cfg.runtime.amp, cfg.runtime.channels_last, cfg.runtime.amp_dtype)
    _seed_everything(cfg.runtime.seed + rank, cfg.runtime.deterministic)

    o = cfg.optim
    loaders = build_loaders(cfg.data, o.batch_size, cfg.runtime.seed, rank, world, pin_memory=device.type == "cuda")
    class_names = loaders.class_names
    model = FLRDF(cfg.model, len(class_names), cfg.data.image_size)
    model.aux_backbone_scale = cfg.loss.aux_backbone_scale
    if model.backbone.init.startswith("random"):
        log.warning("backbone %s: %s - expect slow convergence", cfg.model.backbone, model.backbone.init)
    model.to(device)
    if prec.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, o)
    steps_per_epoch = len(loaders.train)
    if steps_per_epoch == 0:
        raise ValueError("the training split yields no batch; lower optim.batch_size")
    total_steps = o.epochs * steps_per_epoch
    if o.max_steps:
        total_steps = min(total_steps, o.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, o.warmup_steps, o.schedule))

    epoch, step, start_in_epoch = 0, 0, 0
    best_val, final_test = None, None
    refine_decision = None  # model.box_refine=auto, resolved on the validation split at the end (refine_choice)
    data_generator = generator_record(cfg.data.root)  # the synthetic generator's record of the data, if any
    if resume:
        if not run.last.is_file():
            raise FileNotFoundError(f"--resume: {run.last} does not exist (nothing to resume)")
        state = read_checkpoint(run.last)
        model.load_state_dict(state["model"])
        if len(state["optimizer"]["param_groups"]) != len(optimizer.param_groups):
            raise ValueError(f"--resume: the checkpoint's optimizer has {len(state['optimizer']['param_groups'])} "
                             f"parameter groups, this config {len(optimizer.param_groups)}; keep "
                             f"optim.no_decay_norm_bias as the run was started")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if prec.scaler is not None and "scaler" in state:
            prec.scaler.load_state_dict(state["scaler"])
        epoch, step = state["epoch"], state["step"]
        start_in_epoch = state["extra"].get("batch_in_epoch", 0)
        best_val = state["extra"].get("best_val_top1")
        ranks = state.get("rng_ranks") or []
        if len(ranks) == world:
            set_rng_state(ranks[rank])
        elif world == 1:
            set_rng_state(state["rng"])
        else:  # saved by another world size or an older version: distinct, reproducible streams per rank
            _rank_rng(cfg.runtime.seed, rank, epoch, step)
            log.warning("checkpoint holds no RNG state for rank %d of %d; derived from (seed, rank, epoch, step)",
                        rank, world)
        if is_main:
            run.truncate_metrics_after(step)
        log.info("resumed from %s at epoch %d, step %d", run.last, epoch, step)
    if is_main and cfg.runtime.tensorboard:  # metrics lines mirrored as event files; a resume purges later steps
        from flrdf.engine.tensorboard_log import TensorBoardLog

        run.mirrors.append(TensorBoardLog(run.path, purge_step=step + 1 if resume else None))

    train_model = model
    if ddp:
        ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=o.raw_warmup_epochs > 0, **ddp_kwargs)
    if cfg.runtime.compile:
        train_model = torch.compile(train_model)

    log.info("config %s | %s | %d classes | %d train batches/epoch x %d epochs | %s | world %d",
             cfg.name, cfg.data.dataset, len(class_names), steps_per_epoch, o.epochs, prec.describe(), world)

    def checkpoint(path, batch_in_epoch=0, ep=None):
        # every rank calls this (a collective): each rank's RNG state goes into the file rank 0 writes
        ranks = distributed.all_gather_objects(rng_state()) if ddp else None
        if is_main:
            save_checkpoint(path, model, cfg, class_names, epoch=epoch if ep is None else ep, step=step,
                            optimizer=optimizer, scheduler=scheduler, scaler=prec.scaler,
                            extra={"batch_in_epoch": batch_in_epoch, "best_val_top1": best_val,
                                   "refine_decision": refine_decision, "data_generator": data_generator},
                            rng_ranks=ranks)

    def stop_requested() -> bool:
        flag = stop.signal is not None
        if ddp:
            t = torch.tensor([1.0 if flag else 0.0], device=distributed.collective_device(model))
            dist.all_reduce(t)
            flag = bool(t.item() > 0)
        return flag

    def log_eval(split: str, loader) -> dict:
        # the map's boxes, not GrabCut's (model.box_refine): a per-image CPU pass per epoch is not worth it
        with model.without_refinement():
            result = evaluate(model if ddp else train_model, loader, prec, jigsaw=cfg.runtime.eval_jigsaw)
        if is_main:
            run.append_metrics({"step": step, "epoch": epoch, "split": split, **result, "time": time.time()})
        log.info("eval %s epoch %d: %s", split, epoch, {k: v for k, v in result.items() if v is not None})
        return result

    done = step >= total_steps
    finished_epoch = True
    while epoch < o.epochs and not done:
        loaders.train_sampler.set_epoch(epoch, start_in_epoch * o.batch_size)
        batch_in_epoch = start_in_epoch
        start_in_epoch = 0
        # Creating the epoch's batch iterator draws a base seed from the DataLoader's generator (by default the
        # global RNG). A run stopped mid-epoch drew it before its checkpoint saved the RNG, so the resumed part
        # of that epoch draws from a throwaway generator: the restored RNG stream then continues exactly.
        loaders.train.generator = torch.Generator() if batch_in_epoch else None
        raw_only = epoch < o.raw_warmup_epochs
        train_model.train()
        sums = torch.zeros(4, device=device)
        bad = torch.zeros((), dtype=torch.bool, device=device)
        n_sum, n_steps, t_last = 0, 0, time.perf_counter()
        epoch_sums, epoch_steps, epoch_t0 = torch.zeros(4, device=device), 0, time.perf_counter()
        bar = tqdm(total=steps_per_epoch, initial=batch_in_epoch, desc=f"epoch {epoch + 1}/{o.epochs}",
                   disable=not (is_main and sys.stderr.isatty()), dynamic_ncols=True)
        for batch in loaders.train:
            ramp_epoch = epoch + batch_in_epoch / max(1, steps_per_epoch) - o.raw_warmup_epochs
            terms = train_step(train_model, batch["image"], batch["label"], optimizer, prec, cfg.loss,
                               raw_only=raw_only, grad_clip=o.grad_clip, loss_epoch=max(0.0, ramp_epoch),
                               source=batch.get("source"))
            scheduler.step()
            step += 1
            batch_in_epoch += 1
            n_sum += batch["image"].shape[0] * world
            stacked = torch.stack([terms[k] for k in ("loss_raw", "loss_object", "loss_jigsaw", "loss_total")])
            sums += stacked
            epoch_sums += stacked
            n_steps += 1
            epoch_steps += 1
            bad |= ~torch.isfinite(terms["loss_total"])
            bar.update(1)
            at_log = step == 1 or step % cfg.runtime.log_every == 0 or batch_in_epoch == steps_per_epoch \
                or step >= total_steps
            if at_log:
                if ddp:
                    dist.all_reduce(sums)
                    sums /= world
                    flag = bad.float()
                    dist.all_reduce(flag)
                    bad = flag > 0
                values = (sums / max(1, n_steps)).tolist()
                dt = time.perf_counter() - t_last
                active = ("raw",) if raw_only else model.branches
                record = {"step": step, "epoch": round(epoch + batch_in_epoch / steps_per_epoch, 4),
                          "loss_raw": values[0], "loss_object": values[1] if "object" in active else None,
                          "loss_jigsaw": values[2] if "jigsaw" in active else None,
                          "loss_total": values[3], "lr": optimizer.param_groups[1]["lr"],
                          "lr_backbone": optimizer.param_groups[0]["lr"],
                          "images_per_s": round(n_sum / dt, 2) if dt > 0 else None, "time": time.time()}
                if bool(bad):
                    msg = (f"loss became NaN/inf at step {step} (epoch {epoch + 1}); "
                           f"last good checkpoint kept: {run.last if run.last.exists() else 'none yet'}. "
                           "Lower the learning rate or enable optim.grad_clip.")
                    if is_main:
                        run.append_metrics(record)
                    raise TrainingFailed(msg)
                if is_main:
                    run.append_metrics(record)
                    run.update_status(epoch=epoch, step=step, total_steps=total_steps)
                bar.set_postfix(loss=f"{values[3]:.3f}", ips=record["images_per_s"])
                sums.zero_()
                n_sum, n_steps, t_last = 0, 0, time.perf_counter()
            if step >= total_steps:
                done = True
                break
            if stop_requested():
                bar.close()
                checkpoint(run.last, batch_in_epoch)
                name = signal.Signals(stop.signal).name if stop.signal else "signal"
                log.info("stopped by %s at step %d; checkpoint %s", name, step, run.last)
                return {"state": "stopped", "step": step, "epoch": epoch, "stopped_by": name}
        bar.close()
        if epoch_steps:
            secs = time.perf_counter() - epoch_t0
            avg = (epoch_sums / epoch_steps).tolist()
            log.info("epoch %d/%d: %d steps in %.1fs (%.1f images/s) | loss_total %.4f raw %.4f object %.4f jigsaw %.4f",
                     epoch + 1, o.epochs, epoch_steps, secs, epoch_steps * o.batch_size * world / secs,
                     avg[3], avg[0], avg[1], avg[2])
        finished_epoch = batch_in_epoch >= steps_per_epoch
        if finished_epoch:
            epoch += 1
            if loaders.val is not None:
                val = log_eval("val", loaders.val)
                if best_val is None or val["top1"] > best_val:  # best_val survives a resume (checkpoint extra)
                    best_val = val["top1"]
                    checkpoint(run.best)
        last = done or epoch >= o.epochs
        periodic = finished_epoch and cfg.runtime.eval_every and epoch % cfg.runtime.eval_every == 0
        if loaders.test is not None and (last or periodic):
            final_test = log_eval("test", loaders.test)
        # after the evaluations (their loaders draw from the RNG), so a resume continues the same RNG stream
        if finished_epoch and cfg.runtime.checkpoint_every and epoch % cfg.runtime.checkpoint_every == 0:
            checkpoint(run.last)
        if not last and stop_requested():
            checkpoint(run.last)
            return {"state": "stopped", "step": step, "epoch": epoch}
    if cfg.model.box_refine == "auto":
        refine_decision = _resolve_refinement(model, loaders.val, prec)
    checkpoint(run.last, 0 if finished_epoch else batch_in_epoch)
    log.info("finished: step %d, epoch %d", step, epoch)
    result = {"state": "finished", "step": step, "epoch": epoch, "final": final_test, "best_val_top1": best_val,
              "refine_decision": refine_decision}
    if ddp:
        result["rank_checksums"] = _rank_checksums(model)
        log.info("parameter checksums per rank: %s", result["rank_checksums"])
    return result


def _resolve_refinement(model: FLRDF, val_loader, prec) -> dict | None:
    """model.box_refine=auto: both boxes scored on the validation split, auto set to the winner (the final
    checkpoint's config carries it); None, and the map's box in evaluation, without a validation split."""
    if val_loader is None:
        log.warning("model.box_refine=auto stays unresolved: there is no validation split (data.val_fraction=0); "
                    "evaluation reports the map's box")
        return None
    decision = resolve(model, val_loader, prec, "val")
    if decision is None:
        log.warning("model.box_refine=auto stays unresolved: the validation split has no boxes")
        return None
    log.info("model.box_refine=auto -> %s: validation loc_acc %.4f GrabCut-refined vs %.4f the map's box (n=%d)",
             decision.decision, decision.loc_acc_refined, decision.loc_acc_map, decision.n_box)
    return decision.to_dict()


def _rank_checksums(model) -> list[float]:
    """Sum of all parameters and DDT statistics on every rank - equal when DDP kept the replicas in sync
    (the DDT moments are all-reduced at each update, flrdf.ddt)."""
    kept = list(model.parameters()) + (list(model.ddt.buffers()) if getattr(model, "ddt", None) is not None else [])
    total = torch.stack([t.detach().double().sum() for t in kept]).sum().reshape(1)
    total = total.to(distributed.collective_device(model))
    gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    return [float(t.item()) for t in gathered]
