"""`manage.py train|evaluate|translate` are mlcore's own command line, so they work on plain files too."""
import sys

from django.core.management.base import BaseCommand


class MlcoreCommand(BaseCommand):
    subcommand = ""

    def run_from_argv(self, argv):
        from mlcore.cli import main

        sys.exit(main([self.subcommand, *argv[2:]]))

    def handle(self, *args, **options):  # call_command(): same arguments as on the command line
        from mlcore.cli import main

        code = main([self.subcommand, *args])
        if code:
            from django.core.management.base import CommandError

            raise CommandError(f"{self.subcommand} failed (exit status {code}); see the message above.")
