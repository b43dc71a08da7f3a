"""Training and translation jobs: the Django side of mlcore.cli / mlcore.infer."""
from __future__ import annotations

import io
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
from django.db import transaction

from imaging.models import ImagePair
from ssumweb.errors import DomainError
from ssumweb.media import absolute

from .models import TrainedModel, TrainingRun, Translation

log = logging.getLogger(__name__)


def experiment_config(settings: dict, *, source_crop: int):
    """The paper's configuration with the settings a lab member chose in the form."""
    from .config import preset

    cfg = preset("paper")
    crop = min(int(settings.get("crop_px", 256)), source_crop)
    crop -= crop % 4
    steps = int(settings.get("steps", 2000))
    return cfg.replace(
        generator__blocks=int(settings.get("blocks", 9)), generator__features=int(settings.get("features", 64)),
        loss__cycle=float(settings.get("lambda_cycle", 10.0)),
        loss__contextual=float(settings.get("lambda_contextual", 1.0)),
        loss__paired_l1=float(settings.get("lambda_paired", 0.0)),
        data__crop=crop, data__source_crop=source_crop,
        train__lr=float(settings.get("learning_rate", 2e-4)), train__batch_size=int(settings.get("batch_size", 4)),
        train__seed=int(settings.get("seed", 0)), train__constant_steps=steps // 2,
        train__decay_steps=steps - steps // 2, train__checkpoint_every=max(1, min(500, steps // 4)),
        train__device="auto")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def stage_pairs(run: TrainingRun, folder: Path) -> tuple[int, float]:
    """Lay the run's training pairs (of its pair sets, one per registration) out as lr/ + hr/ (hard links);
    returns (tile size, pixel size)."""
    pairs = list(ImagePair.objects.filter(pair_set__in=run.pair_sets.all(), split="train"))
    if not pairs:
        raise DomainError("The chosen pair sets have no training pairs.")
    sizes = {p.box_size for p in pairs}
    pixel_sizes = {round(p.pixel_size_nm, 3) for p in pairs}
    if len(sizes) > 1 or len(pixel_sizes) > 1:
        raise DomainError("The chosen pairs differ in tile size or pixel size; train on pairs cut alike.")
    lay_out_pairs(pairs, folder)
    return sizes.pop(), pairs[0].pixel_size_nm


def lay_out_pairs(pairs, folder: Path) -> None:
    """A fresh lr/ + hr/ folder of the pairs' files (hard links), the layout mlcore.data reads."""
    if folder.exists():
        shutil.rmtree(folder)
    for pair in pairs:
        _link_or_copy(absolute(pair.lr_image.name), folder / "lr" / f"{pair.pk:07d}{Path(pair.lr_image.name).suffix}")
        _link_or_copy(absolute(pair.hr_image.name), folder / "hr" / f"{pair.pk:07d}{Path(pair.hr_image.name).suffix}")


def run_folder(run: TrainingRun) -> str:
    """The run's media folder: data/ (its pairs, staged), checkpoints/, samples/ and, once finished, model.pt."""
    return f"training/{run.pk}"


_SAMPLE_NAME = re.compile(r"step(\d+)\.png$")


def sample_path(run: TrainingRun, step: int) -> str:
    return f"{run_folder(run)}/samples/step{step:07d}.png"


def sample_step(path: str | Path) -> int:
    """The step a sample image was made at, from its name (see :func:`sample_path`)."""
    return int(_SAMPLE_NAME.search(str(path)).group(1))


def rewind_to_checkpoint(run: TrainingRun, progress) -> None:
    """Cut what a run recorded back to the checkpoint the trainer will go on from (to nothing without one) and say so.

    A worker killed between checkpoints leaves losses and samples of steps no checkpoint holds; the trainer makes
    them again, so kept they were recorded twice (a history of 1…15, 11, 12, …, 40). The losses, the samples and
    their files after the checkpoint go; ``resume_note``, the job's message and a ``training.resumed`` event
    (``step``, ``samples`` kept, ``note``) tell the user where the run goes on from. A run that never got past
    step 0 is left as it is."""
    from .checkpoint import checkpoint_step, latest_checkpoint

    folder = absolute(run_folder(run))
    last = latest_checkpoint(folder / "checkpoints")
    step = checkpoint_step(last) if last is not None else 0
    reached = max([run.step, *(e["step"] for e in run.loss_history)])
    if reached == 0 and step == 0:
        return
    if last is None:
        note = f"No checkpoint was saved before the run stopped at step {reached}: training starts again from step 1."
    else:
        note = f"Resumed from the checkpoint at step {step} of {run.total_steps}"
        if reached == step + 1:
            note += f"; step {reached}, done after it, is trained again."
        elif reached > step:
            note += f"; steps {step + 1}–{reached}, done after it, are trained again."
        else:
            note += "."
    # one entry a step, in step order: runs resumed before this cut had some twice
    history = {e["step"]: e for e in run.loss_history if e["step"] <= step}
    run.loss_history = [history[s] for s in sorted(history)]
    run.samples = sorted({p for p in run.samples if sample_step(p) <= step}, key=sample_step)
    run.step, run.resume_note = step, note
    TrainingRun.objects.filter(pk=run.pk).update(step=run.step, loss_history=run.loss_history, samples=run.samples,
                                                 resume_note=note)
    for path in (folder / "samples").glob("step*.png"):  # listed or not: written just before the worker died
        if sample_step(path) > step:
            path.unlink(missing_ok=True)
    log.info("training run %s goes on from step %d (it had reached step %d)", run.pk, step, reached)
    progress(step / max(1, run.total_steps), note, force=True)
    progress.event("training.resumed", step=step, samples=len(run.samples), note=note)


def training_work(run: TrainingRun, progress) -> dict:
    from .cli import run_training

    folder = run_folder(run)
    rewind_to_checkpoint(run, progress)
    tile_px, pixel_size_nm = stage_pairs(run, absolute(folder) / "data")
    cfg = experiment_config(run.config, source_crop=tile_px)
    history: list[dict] = list(run.loss_history)
    samples: list[str] = list(run.samples)

    def report(p) -> None:
        entry = {"step": p.step, **{k: round(float(v), 5) for k, v in p.losses.items()}}
        history.append(entry)
        extra = {}
        if p.samples:
            rel = sample_path(run, p.step)
            _write_sample_strip(p.samples, rel)
            samples.append(rel)
            extra["sample_index"] = len(samples) - 1
        TrainingRun.objects.filter(pk=run.pk).update(step=p.step, loss_history=history[-2000:], samples=samples)
        # the trainer checks ``cancelled`` itself right after, and saves a checkpoint before it stops: a cancel
        # raised here lost every step since the last periodic one
        progress(p.step / max(1, p.total_steps), f"Step {p.step} of {p.total_steps}", step=p.step,
                 losses=entry, eta_s=round(p.eta_s, 1), cancellable=False, **extra)

    def cancelled() -> bool:
        return TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists()

    result = run_training(absolute(folder) / "data", absolute(folder), config=cfg, progress=report,
                          should_cancel=cancelled)
    TrainingRun.objects.filter(pk=run.pk).update(checkpoint=str(Path(folder) / "checkpoints"))
    if result.status != "finished":
        from ssumweb.errors import JobCancelled

        raise JobCancelled()
    progress(0.97, "Evaluating on the held-out pairs…", force=True)
    metrics = evaluate_run(run, absolute(folder) / "model.pt")
    with transaction.atomic():
        model = TrainedModel.objects.create(
            project_id=run.project_id, name=run.name, training_run=run, config=cfg.to_dict(),
            weights=f"{folder}/model.pt", pixel_size_nm=pixel_size_nm, metrics=metrics,
            normalisation=_normalisation_of(absolute(folder) / "model.pt"))
    return {"model": model.pk, "steps": result.step}


def _normalisation_of(model_path: Path) -> dict:
    from .infer import load_model

    model = load_model(model_path)
    return {"ssum": model.norm_a.to_dict(), "sem": model.norm_b.to_dict()}


def evaluate_run(run: TrainingRun, model_path: Path) -> dict:
    """Model and baselines on the run's held-out pairs (empty when none were held out)."""
    from .data import load_pair_folder
    from .evaluate import evaluate
    from .infer import load_model

    test_pairs = list(ImagePair.objects.filter(pair_set__in=run.pair_sets.all(), split="test"))
    if not test_pairs:
        return {}
    folder = absolute(f"training/{run.pk}/test")
    lay_out_pairs(test_pairs, folder)
    scores = evaluate(load_model(model_path, device="auto"), load_pair_folder(folder)).to_dict()
    # Keyed by method ("model", "input", "unsharp", "richardson_lucy") for pages and scripts.
    return {"pairs": scores["pairs"], "max_shift_px": scores["max_shift"],
            **{row.pop("method"): row for row in scores["rows"]}}


def _write_sample_strip(samples: dict, rel: str) -> None:
    """Per-epoch samples side by side (input | translated | cycled …) as one 8-bit PNG."""
    from PIL import Image

    from imaging.imageio import atomic_write_bytes

    tiles = [np.clip(np.asarray(img, dtype=np.float32), 0, 1) for img in samples.values()]
    height = max(t.shape[0] for t in tiles)
    strip = np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 2))) for t in tiles], axis=1)
    buffer = io.BytesIO()
    Image.fromarray((strip * 255).astype(np.uint8)).save(buffer, format="PNG")
    atomic_write_bytes(absolute(rel), buffer.getvalue())


def translation_work(translation: Translation, progress) -> dict:
    from imaging.imageio import DisplayWindow, display_window
    from imaging.jobs import build_pyramid_from_file
    from imaging.pyramid import read_subsample

    from .cli import run_translation

    mosaic = translation.mosaic
    folder = f"scans/{mosaic.scan_id}/translations/{translation.pk}"
    output, risk = f"{folder}/sem_like.tif", f"{folder}/risk.tif"

    def report(done: int, total: int, **_):
        progress(0.85 * done / max(1, total), f"Tile {done} of {total}")

    def cancelled() -> bool:
        return Translation.objects.filter(pk=translation.pk, cancel_requested=True).exists()

    run_translation(absolute(translation.model.weights.name), absolute(mosaic.image.name), absolute(output),
                    risk_path=absolute(risk), progress=report, should_cancel=cancelled)
    Translation.objects.filter(pk=translation.pk).update(output=output, risk_map=risk)
    progress(0.9, "Building the deep-zoom pyramids…", force=True)
    # The outputs are streamed from their files and their statistics taken on a ~1 Mpx regular
    # subsample, so memory does not grow with the mosaic.
    window = display_window(read_subsample(absolute(output)))
    pyramid = build_pyramid_from_file(absolute(output), window, folder, pixel_size_nm=mosaic.pixel_size_nm)
    risk_scale = max(float(np.percentile(read_subsample(absolute(risk)), 99.5)), 1e-6)
    risk_pyramid = build_pyramid_from_file(absolute(risk), DisplayWindow(0, 65535), f"{folder}/risk",
                                           divide_by=risk_scale, pixel_size_nm=mosaic.pixel_size_nm)
    Translation.objects.filter(pk=translation.pk).update(pyramid=pyramid, risk_pyramid=risk_pyramid,
                                                         display_low=window.low, display_high=window.high)
    return {"output": output}
