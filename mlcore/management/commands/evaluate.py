from ._mlcore_cli import MlcoreCommand


class Command(MlcoreCommand):
    help = "See: python manage.py evaluate --help (the same as python -m mlcore evaluate)."
    subcommand = "evaluate"
