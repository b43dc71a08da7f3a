from ._mlcore_cli import MlcoreCommand


class Command(MlcoreCommand):
    help = "See: python manage.py translate --help (the same as python -m mlcore translate)."
    subcommand = "translate"
