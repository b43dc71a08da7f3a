from django_tasks import task

from .jobs import run_job


@task(queue_name="demo")  # its own worker: it waits on the jobs the processing worker runs
def run_demo(demo_id: int) -> dict:
    from .demo import demo_work

    return run_job("ssumweb.DemoRun", demo_id, demo_work)
