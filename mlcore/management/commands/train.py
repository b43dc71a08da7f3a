from ._mlcore_cli import MlcoreCommand


class Command(MlcoreCommand):
    help = "See: python manage.py train --help (the same as python -m mlcore train)."
    subcommand = "train"
