"""Run the whole lab app in one process: web + websockets (daphne), task workers, hardware worker."""
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve ssumweb; on the embedded default also run the task workers and the simulated hardware worker."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host, port, **options):
        from daphne.server import Server

        from ssumweb.asgi import application
        from ssumweb.jobs import reap_interrupted
        from ssumweb.workers import start_reaper, start_task_worker

        if settings.EMBEDDED_WORKERS:
            if interrupted := reap_interrupted():  # this process was their only worker
                self.stdout.write(f"{interrupted} job(s) the server was running when it stopped are marked failed.")
            from imaging.jobs import requeue_lost_sem_pyramids
            from ssumweb.media import sweep_staging

            requeue_lost_sem_pyramids()
            # nothing of this process writes yet; a hardware worker elsewhere may, so there only old leftovers
            removed, freed = sweep_staging(0 if settings.EMBEDDED_HARDWARE_WORKER else 86400)
            if removed:
                self.stdout.write(f"Removed {removed} unfinished file(s) a crash left ({freed / 1e6:.1f} MB).")
            start_task_worker(["default", "processing"], "embedded-processing")
            start_task_worker(["training"], "embedded-training")
            start_task_worker(["demo"], "embedded-demo")
            start_reaper()
        if settings.EMBEDDED_HARDWARE_WORKER:
            from instruments.worker import start_embedded_workers

            start_embedded_workers()
        self.stdout.write(f"ssumweb is at http://{host}:{port}/  (Ctrl-C stops it)")
        Server(application, endpoints=[f"tcp:port={port}:interface={host}"], verbosity=0).run()
