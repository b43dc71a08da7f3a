"""The imaging jobs as django-tasks tasks: each runs one job object through ssumweb.jobs.run_job."""
from django_tasks import task

from ssumweb.jobs import run_job


@task(queue_name="processing")
def stitch_mosaic(mosaic_id: int) -> dict:
    from .jobs import stitch_work

    return run_job("imaging.Mosaic", mosaic_id, stitch_work)


@task(queue_name="processing")
def register_images(registration_id: int) -> dict:
    from .jobs import registration_work

    return run_job("imaging.Registration", registration_id, registration_work)


@task(queue_name="processing")
def extract_pairs(pair_set_id: int) -> dict:
    from .jobs import pairs_work

    return run_job("imaging.PairSet", pair_set_id, pairs_work)


@task(queue_name="processing")
def build_sem_pyramid(sem_image_id: int) -> dict:
    from .jobs import sem_pyramid_work

    return sem_pyramid_work(sem_image_id)
