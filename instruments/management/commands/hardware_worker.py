"""Run the hardware worker of one instrument as its own process (scaled-out deployments)."""
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from instruments.models import Instrument
from instruments.worker import HardwareWorker


class Command(BaseCommand):
    help = "Own one instrument's devices: run its scans, stream its camera, answer pause/abort/jog."

    def add_arguments(self, parser):
        parser.add_argument("instrument", help="The instrument's id or name.")

    def handle(self, *args, instrument, **options):
        record = (Instrument.objects.filter(pk=int(instrument)) if instrument.isdigit()
                  else Instrument.objects.filter(name=instrument)).first()
        if record is None:
            raise CommandError(f"No instrument {instrument!r}; `manage.py shell -c \"from instruments.models import "
                               "Instrument; print(list(Instrument.objects.values_list('id', 'name')))\"` lists them.")
        try:
            worker = HardwareWorker(record.pk).start()
        except Exception as exc:
            raise CommandError(f"Could not start {record.name}: {exc}") from None
        self.stdout.write(f"Hardware worker for {record.name} is running (Ctrl-C stops it and retracts the sphere).")
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        worker.stop()
