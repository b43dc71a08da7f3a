"""What live translation costs a scan: frames/s on the simulated bench with and without a model.

    .venv/bin/python bench/bench_live_translation.py [--quick] [--rounds N]

A fresh database in a temporary SSUMWEB_VAR_DIR, the real HardwareWorker on the simulated bench
(embedded, as the server runs it), the real LiveMosaic (and, for a scan started with a model, its
LiveTranslation thread). Scans of an n × n grid alternate without/with the tiny CycleGAN (the
`tiny` preset, random weights: inference cost, not quality, is measured) in one run, so both share
the machine's load. frames/s = (frames − 1) / (last save − first save), from the worker's
on_frame_saved callback; the translation's own progress (tiles done / total at the scan's end) and
the seconds from the scan's end until it caught up are printed beside it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 × 2 grids, one round")
    parser.add_argument("--rounds", type=int, default=None, help="scan pairs (default 2, 1 with --quick)")
    parser.add_argument("--grid", type=int, default=None, help="frames per side (default 3, 2 with --quick)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    grid = args.grid or (2 if args.quick else 3)
    if rounds < 1 or grid < 2:
        raise ValueError("--rounds must be ≥ 1 and --grid ≥ 2")

    var_dir = tempfile.mkdtemp(prefix="bench-live-translation-")
    os.environ.update(SSUMWEB_VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="ssumweb.settings",
                      EMBEDDED_WORKERS="0", EMBEDDED_HARDWARE_WORKER="0")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from imaging.models import Sample, Scan, ScanStatus
    from imaging.services import plan_scan, request_action
    from instruments.models import Instrument
    from instruments.worker import HardwareWorker
    from ssumweb.models import Event, Membership, Project, Role
    from tests.instruments.test_live_translation import save_tiny_model

    project = Project.objects.create(name="bench")
    user = get_user_model().objects.create_user(username="bench", password="x")
    Membership.objects.create(project=project, user=user, role=Role.OPERATOR)
    model = save_tiny_model(project, Path(settings.MEDIA_ROOT))
    instrument = Instrument.objects.create(project=project, name="sim", sim_seed=3)
    saved: list[float] = []
    worker = HardwareWorker(instrument.pk, poll_s=0.05, on_frame_saved=lambda *_: saved.append(time.monotonic()))
    worker.start()
    instrument.refresh_from_db()
    sample = Sample.objects.create(project=project, name="chip")
    side = instrument.fov_diameter_nm / 2**0.5
    size = side + (grid - 1) * side * 0.6
    rates = {"without": [], "with": []}
    try:
        for k in range(rounds):
            for label in ("without", "with"):
                saved.clear()
                plan = dict(origin_x_nm=20000, origin_y_nm=20000, size_x_nm=size, size_y_nm=size, overlap=0.4,
                            exposure_ms=5, contact_setpoint_nm=20)
                scan = plan_scan(sample=sample, name=f"{label}-{k}", plan=plan, instrument=instrument, user=user,
                                 translate_with=model if label == "with" else None)
                request_action(scan, "start")
                deadline = time.monotonic() + 600
                while Scan.objects.get(pk=scan.pk).status != ScanStatus.COMPLETED:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"scan {scan.pk} did not complete")
                    time.sleep(0.05)
                while worker.scan_id is not None:  # the live mosaic (and translation) closed
                    time.sleep(0.05)
                fps = (len(saved) - 1) / (saved[-1] - saved[0])
                rates[label].append(fps)
                note = ""
                if label == "with":
                    events = Event.objects.filter(topic=f"scan.{scan.pk}", type="translation.live").order_by("seq")
                    last = events.last()
                    note = (f"  translation.live events: {events.count()}, at the end "
                            f"{last.payload['tiles_done']}/{last.payload['tiles_total']} tiles" if last else
                            "  no translation.live event")
                print(f"round {k + 1}: {grid}×{grid} scan {label:7s} a model: {fps:5.2f} frames/s{note}", flush=True)
    finally:
        worker.stop()
    base, live = (sum(rates[key]) / len(rates[key]) for key in ("without", "with"))
    print(f"\nframes/s, mean of {rounds}: without a model {base:.2f} (baseline), with live translation "
          f"{live:.2f}  ratio {live / base:.2f}")


if __name__ == "__main__":
    main()
