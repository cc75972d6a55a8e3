"""DreamBooth and LoRA fine-tuning of an inpainting model through accelerate.

One loop serves both modes; they differ only in what is trainable and what is written at the end
(see parts.py). Run it directly or under `accelerate launch` with any configuration.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from restyle.errors import InvalidParameterError, RestyleError
from restyle.train import checkpoints as ckpt
from restyle.train.accel import (
    check_launch,
    class_examples,
    cpu_only_multiprocess,
    load_trainable_only,
    optimizer_class,
    save_trainable_only,
    shared_segment_masks,
)
from restyle.train.batches import TrainSet, fit_items
from restyle.train.config import TrainConfig
from restyle.train.data import load_example_image, scan_class_images, scan_instances
from restyle.train.lock import hold
from restyle.train.parts import (
    LORA_FILE,
    Parts,
    half_precision,
    load_parts,
    save_lora,
    save_pipeline,
    set_trainable,
)
from restyle.train.tracking import JsonlTracker
from restyle.train.validation import Validator

log = logging.getLogger(__name__)

SUMMARY_FILE = "restyle_train.json"


@dataclass
class TrainResult:
    """What a finished run wrote and how it went."""

    output: Path  # the diffusers folder (dreambooth) or the LoRA file (lora)
    steps: int  # optimizer steps done in total (including those before a resume)
    resumed_from: int  # step of the checkpoint this run resumed, 0 for a fresh run
    final_loss: float | None
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    validation: list[Path] = field(default_factory=list)
    main_process: bool = True  # False in the other processes of a distributed run


class Trainer:
    """Runs one TrainConfig; `run()` does the whole job in numbered steps."""

    def __init__(self, config: TrainConfig, *, progress_bar: bool = True) -> None:
        self.config = config
        self.progress_bar = progress_bar
        self.out = Path(config.output_dir)

    def run(self) -> TrainResult:
        c = self.config
        started = time.perf_counter()
        # 1. Check inputs: every image is opened before any model is loaded
        c.check()
        check_launch()
        instances = scan_instances(
            c.instance_dir,
            c.instance_prompt,
            min_side=c.smallest_side,
            min_images=c.min_images,
            mask_dir=c.mask_dir,
        )
        if c.class_dir is not None:
            scan_class_images(c.class_dir, c.class_prompt, min_side=c.smallest_side)
        self.validator = Validator(c, instances[0], self.out / "validation")
        path = ckpt.resolve_resume(self.out, c.resume_from_checkpoint)  # checked whole before any work
        self.resume = (path, ckpt.read_state(path) if path is not None else {})
        # 2. Accelerator, this run's lock on the output folder, trackers
        acc = self._accelerator()
        self.acc = acc
        lock = hold(self.out, acc)
        try:
            acc.init_trackers("restyle-train", config={**c.to_log(), "num_processes": acc.num_processes})
            return self._train(instances, started)
        finally:
            if lock is not None:
                lock.release()

    def _train(self, instances: list[Any], started: float) -> TrainResult:
        c, acc = self.config, self.acc
        if acc.is_main_process:
            ckpt.clean_partials(self.out)
        acc.wait_for_everyone()
        # 3. Base model
        parts = load_parts(c.base, acc.device)
        self.parts = parts
        # 4. Class images and 5. segmenter masks, then fitted data
        classes = class_examples(c, acc, parts, self.progress_bar) if c.with_prior else []
        seg = shared_segment_masks(c, acc, instances + classes, self.out / "masks")
        data = TrainSet(
            fit_items(instances, c.resolution, c.fit, load_example_image, seg),
            fit_items(classes, c.resolution, c.fit, load_example_image, seg),
            seed=c.seed,
            batch_size=c.train_batch_size,
            mask_mix=c.masks,
        )
        self.validator.use_segment_masks(seg)
        # 6. What is trained, optimizer, schedule
        params = set_trainable(parts, c)
        self._prepare(params)
        # 7. Resume
        first = self._resume()
        # 8. Train
        loss = self._loop(data, first)
        # 9. The output, written atomically, then the final validation images
        acc.wait_for_everyone()
        result = TrainResult(
            output=self.out / LORA_FILE if c.mode == "lora" else self.out,
            steps=c.max_train_steps,
            resumed_from=first,
            final_loss=loss,
            seconds=time.perf_counter() - started,
            stats=self._stats(first, started),
            main_process=acc.is_main_process,
        )
        if acc.is_main_process:
            self._write_output(result)
            try:
                result.validation = self.validator.run(self._unwrapped(), "final", acc.autocast)
            except RestyleError as err:  # the model is saved; a failed preview must not lose it
                log.warning("final validation images failed (the model is saved): %s", err)
        acc.wait_for_everyone()
        acc.end_training()
        return result

    # -- setup ---------------------------------------------------------------------------------------

    def _accelerator(self) -> Any:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        c = self.config
        logs = c.logs
        acc = Accelerator(
            cpu=cpu_only_multiprocess(),
            gradient_accumulation_steps=c.gradient_accumulation_steps,
            mixed_precision=c.mixed_precision,  # None: whatever `accelerate launch` / its config says
            log_with=[JsonlTracker(logs), *c.report_to],
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(logs)),
        )
        if not acc.is_main_process:  # one voice: the main process reports for all
            logging.getLogger("restyle").setLevel(logging.WARNING)
        if acc.device.type == "cpu" and acc.mixed_precision == "fp16":
            raise InvalidParameterError(
                "mixed_precision: fp16 needs a GPU; use bf16 (or no) on CPU", field="mixed_precision"
            )
        log.info(
            "training %s on %d process(es), device %s, mixed precision %s",
            c.mode,
            acc.num_processes,
            acc.device,
            acc.mixed_precision,
        )
        return acc

    def _prepare(self, params: list[Any]) -> None:
        import torch
        from diffusers.optimization import get_scheduler

        c, acc, parts = self.config, self.acc, self.parts
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(acc.mixed_precision, torch.float32)
        self.weight_dtype = weight_dtype
        if weight_dtype != torch.float32:  # frozen parts run in the mixed-precision dtype
            half_precision(parts, c, weight_dtype)
        lr = c.learning_rate
        if c.scale_lr:  # as the reference script: by the images one optimizer step sees
            lr *= c.train_batch_size * c.gradient_accumulation_steps * acc.num_processes
            log.info(
                "scale_lr: learning rate %g x %d images per step = %g",
                c.learning_rate,
                lr / c.learning_rate,
                lr,
            )
        optimizer = optimizer_class(c)(
            params,
            lr=lr,
            betas=(c.adam_beta1, c.adam_beta2),
            eps=c.adam_epsilon,
            weight_decay=c.adam_weight_decay,
        )
        scheduler = get_scheduler(
            c.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=c.lr_warmup_steps * acc.num_processes,
            num_training_steps=c.max_train_steps * acc.num_processes,
        )
        self.params = params
        if c.train_text_encoder:
            self.unet, self.text_encoder, self.optimizer, self.scheduler = acc.prepare(
                parts.unet, parts.text_encoder, optimizer, scheduler
            )
        else:
            self.unet, self.optimizer, self.scheduler = acc.prepare(parts.unet, optimizer, scheduler)
            self.text_encoder = parts.text_encoder
        if c.mode == "lora":
            acc.register_save_state_pre_hook(save_trainable_only)
            acc.register_load_state_pre_hook(load_trainable_only)

    def _run_state(self) -> dict[str, Any]:
        """The settings a checkpoint must share with the run that resumes it (see RESUME_KEYS), as JSON
        reads them back (tuples as lists), so a checkpoint's values compare equal to a new run's."""
        import json

        c = self.config
        state = {k: getattr(c, k) for k in ckpt.RESUME_KEYS if hasattr(c, k)}
        state.update(num_processes=self.acc.num_processes, mixed_precision=self.acc.mixed_precision)
        return json.loads(json.dumps(state, default=str))

    def _resume(self) -> int:
        c = self.config
        path, state = self.resume
        if path is None:
            if c.resume_from_checkpoint:
                log.info("no checkpoint in %s yet: starting from step 0", self.out)
            return 0
        ckpt.check_compatible(state, self._run_state(), path)
        self.acc.load_state(str(path))
        log.info("resumed from %s (step %d)", path.name, state["step"])
        return int(state["step"])

    # -- training ------------------------------------------------------------------------------------

    def _loop(self, data: TrainSet, first: int) -> float | None:
        import torch
        from tqdm.auto import tqdm

        c, acc = self.config, self.acc
        bar = tqdm(
            total=c.max_train_steps,
            initial=first,
            desc=f"train {c.mode}",
            unit="step",
            disable=not (self.progress_bar and acc.is_main_process),
        )
        self._set_train(True)
        loss_value = None
        for step in range(first, c.max_train_steps):
            tic = time.perf_counter()
            total = 0.0
            for micro in range(c.gradient_accumulation_steps):
                batch = data.batch(
                    step, micro, c.gradient_accumulation_steps, acc.process_index, acc.num_processes
                )
                total += self._micro_step(batch, step, micro) / c.gradient_accumulation_steps
            loss_value = float(acc.gather(torch.tensor([total], device=acc.device)).mean())
            done = step + 1
            acc.log(
                {
                    "loss": loss_value,
                    "lr": self.scheduler.get_last_lr()[0],
                    "step_s": time.perf_counter() - tic,
                },
                step=done,
            )
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            # the last step is checkpointed only when checkpoints are kept: then a longer run can resume it
            last = done == c.max_train_steps
            if (
                c.checkpointing_steps
                and done % c.checkpointing_steps == 0
                and (not last or c.keep_checkpoints)
            ):
                self._checkpoint(done)
            validate = c.validation_steps and done % c.validation_steps == 0 and done < c.max_train_steps
            if validate and acc.is_main_process:
                self.validator.run(self._unwrapped(), f"step-{done:06d}", acc.autocast)
                self._set_train(True)
        bar.close()
        return loss_value

    def _micro_step(self, batch: dict[str, Any], step: int, micro: int) -> float:
        import torch

        c, acc = self.config, self.acc
        models = [self.unet, self.text_encoder] if c.train_text_encoder else [self.unet]
        # noise, timesteps and VAE samples depend on (seed, step, process) only: a resume replays them
        entropy = np.random.SeedSequence([c.seed, step, micro, acc.process_index]).generate_state(1)[0]
        gen = torch.Generator().manual_seed(int(entropy))
        with acc.accumulate(*models):
            loss = self._loss(batch, gen)
            acc.backward(loss)
            if acc.sync_gradients and c.max_grad_norm > 0:
                acc.clip_grad_norm_(self.params, c.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _loss(self, batch: dict[str, Any], gen: Any) -> Any:
        import torch
        import torch.nn.functional as F

        parts, acc, dtype = self.parts, self.acc, self.weight_dtype
        pixels = batch["pixels"].to(acc.device, dtype)  # (B, 3, S, S)
        masks = batch["masks"].to(acc.device, dtype)  # (B, 1, S, S), 1 = repaint
        sf = parts.vae.config.scaling_factor
        with torch.no_grad():
            latents = parts.vae.encode(pixels).latent_dist.sample(generator=gen) * sf  # (B, 4, S/8, S/8)
            masked = parts.vae.encode(pixels * (masks < 0.5)).latent_dist.sample(generator=gen) * sf
        mask_lat = F.interpolate(masks, size=latents.shape[-2:])  # (B, 1, S/8, S/8)
        noise = torch.randn(latents.shape, generator=gen).to(acc.device, latents.dtype)
        steps = parts.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (latents.shape[0],), generator=gen).to(acc.device)
        noisy = parts.noise_scheduler.add_noise(latents, noise, t)
        ids = parts.tokenizer(
            batch["captions"],
            padding="max_length",
            max_length=parts.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(acc.device)
        hidden = self.text_encoder(ids)[0]  # (B, 77, D)
        pred = self.unet(torch.cat([noisy, mask_lat, masked], dim=1), t, hidden).sample
        prediction = parts.noise_scheduler.config.prediction_type  # load_parts refuses any other
        target = (
            parts.noise_scheduler.get_velocity(latents, noise, t) if prediction == "v_prediction" else noise
        )
        pred, target = pred.float(), target.float()
        if not self.config.with_prior:
            return F.mse_loss(pred, target)
        n = batch["n_instance"]  # instance rows first, class rows after
        prior = F.mse_loss(pred[n:], target[n:])
        return F.mse_loss(pred[:n], target[:n]) + self.config.prior_loss_weight * prior

    def _set_train(self, on: bool) -> None:
        self.unet.train(on)
        if self.config.train_text_encoder:
            self.text_encoder.train(on)

    def _unwrapped(self) -> Parts:
        self.parts.pipe.unet = self.acc.unwrap_model(self.unet)
        self.parts.pipe.text_encoder = self.acc.unwrap_model(self.text_encoder)
        return self.parts

    # -- checkpoints and output ----------------------------------------------------------------------

    def _checkpoint(self, step: int) -> None:
        import shutil

        acc = self.acc
        partial = ckpt.partial_dir(self.out, step)
        if acc.is_main_process and partial.exists():
            shutil.rmtree(partial)
        acc.wait_for_everyone()
        acc.save_state(str(partial))  # every process: each writes its own random state
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {"step": step, "run": self._run_state(), "time": time.time()}
            ckpt.finish_checkpoint(self.out, step, state, self.config.checkpoints_total_limit)
            log.info("saved checkpoint-%d", step)
        acc.wait_for_everyone()

    def _stats(self, first: int, started: float) -> dict[str, Any]:
        import resource

        import torch

        stats: dict[str, Any] = {
            "mixed_precision": self.acc.mixed_precision,
            "steps_this_run": self.config.max_train_steps - first,
            "num_processes": self.acc.num_processes,
            "device": str(self.acc.device),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if torch.cuda.is_available():
            stats["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return stats

    def _write_output(self, result: TrainResult) -> None:
        import json

        c = self.config
        staged = self.out / "final.partial"
        staged.mkdir(parents=True)
        parts = self._unwrapped()
        if c.mode == "lora":
            save_lora(parts, c, staged)
            last = LORA_FILE
        else:
            save_pipeline(parts, c, staged)
            last = "model_index.json"
        summary = {
            "mode": c.mode,
            "base": c.base,
            "steps": result.steps,
            "final_loss": result.final_loss,
            "seconds": round(result.seconds, 2),
            "stats": result.stats,
            "config": c.to_log(),
        }
        (staged / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        ckpt.publish(staged, self.out, last)
        if not c.keep_checkpoints:
            ckpt.remove_checkpoints(self.out)
        ckpt.clean_partials(self.out)  # nothing half-written or half-deleted outlives a finished run
        log.info("wrote %s", result.output)
