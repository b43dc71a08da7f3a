"""Training and translation as django-tasks tasks (training has its own queue so it never starves the rest)."""
from django_tasks import task

from ssumweb.jobs import run_job


@task(queue_name="training")
def train_model(run_id: int) -> dict:
    from .jobs import training_work

    return run_job("mlcore.TrainingRun", run_id, training_work)


@task(queue_name="processing")
def translate_mosaic(translation_id: int) -> dict:
    from .jobs import translation_work

    return run_job("mlcore.Translation", translation_id, translation_work)
