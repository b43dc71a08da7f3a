"""``manage.py simulate OUT_DIR [--preset tiny|paper] [--seed N]``: write a synthetic data set.

A thin shell around :func:`instruments.sim.dataset.write_dataset` (frames with nominal and true
positions, SEM images with their true transforms, LR/HR pairs, manifest.json).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from instruments.sim.dataset import PRESETS, write_dataset
from instruments.sim.exceptions import SimulationError


class Command(BaseCommand):
    help = "Write a synthetic SSUM/SEM data set (frames, SEM images, LR/HR pairs, manifest.json)."

    def add_arguments(self, parser):
        parser.add_argument("out_dir", help="folder to write into (created if missing)")
        parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                            help="tiny: seconds, for tests; paper: 704 pairs of 512×512 like the paper")
        parser.add_argument("--seed", type=int, default=0, help="chip and noise seed (default 0)")

    def handle(self, *args, out_dir, preset, seed, **options):
        verbosity = options.get("verbosity", 1)

        def progress(done, total, what):
            if verbosity >= 2:
                self.stdout.write(f"[{done}/{total}] {what}")

        try:
            manifest = write_dataset(out_dir, preset=preset, seed=seed, progress=progress)
        except (SimulationError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(
            f"wrote {len(manifest.frames)} frames, {len(manifest.sem_images)} SEM images and "
            f"{len(manifest.pairs)} LR/HR pairs to {manifest.root} (manifest.json)"))
