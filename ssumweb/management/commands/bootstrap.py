"""First run: an admin account with a printed one-time password, and the demo project."""
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from imaging.models import Sample, SampleSurface
from instruments.models import Instrument
from ssumweb.models import Membership, Project, Role

DEMO_PROJECT = "Demo lab"
DEMO_SEED = 7


class Command(BaseCommand):
    help = "Create the first admin (printing a one-time password) and the demo project, if they do not exist."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--no-demo", action="store_true", help="Do not create the demo project.")

    def handle(self, *args, username, no_demo, **options):
        User = get_user_model()
        with transaction.atomic():
            admin = User.objects.filter(is_superuser=True).order_by("pk").first()
            password = None
            if admin is None:
                password = secrets.token_urlsafe(12)
                admin = User.objects.create_superuser(username=username, email="", password=password)
            if not no_demo:
                project, _ = Project.objects.get_or_create(
                    name=DEMO_PROJECT, defaults={"is_demo": True,
                                                 "description": "A simulated SSUM on a synthetic IC chip: try every step here."})
                Membership.objects.get_or_create(project=project, user=admin, defaults={"role": Role.ADMIN})
                # the simulated scanner is a closed-loop piezo: 1.5 nm settling noise and slow drift (StageErrors)
                Instrument.objects.get_or_create(project=project, name="Simulated SSUM",
                                                 defaults={"sim_seed": DEMO_SEED, "stage_repeatability_nm": 2.0})
                Sample.objects.get_or_create(project=project, name="Synthetic IC chip",
                                             defaults={"sim_seed": DEMO_SEED, "created_by": admin,
                                                       "description": "A procedurally generated IC layout (seed 7)."})
                Sample.objects.get_or_create(
                    project=project, name="Bare silicon wafer",
                    defaults={"surface": SampleSurface.BARE_SILICON, "created_by": admin,
                              "description": "A polished wafer with nothing on it: scan it and use that scan as the "
                                             "instrument's flat field (docs/instruments.md, “The flat field”)."})
        if password:
            self.stdout.write(self.style.SUCCESS(
                f"Created the admin account.\n  Username: {admin.username}\n  Password: {password}\n"
                "This password is shown once; change it after logging in (or: python manage.py changepassword "
                f"{admin.username})."))
        else:
            self.stdout.write(f"Log in as {admin.username} (forgot the password? python manage.py changepassword {admin.username}).")
