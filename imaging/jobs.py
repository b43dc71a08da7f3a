"""Imaging jobs: queue them (services side) and do them (task side), thin around the pure algorithms."""
from __future__ import annotations

import logging

from django.db import transaction

from ssumweb import events
from ssumweb.errors import DomainError, InvalidTransition
from ssumweb.models import JobStatus
from ssumweb.tasking import enqueue_after_commit

from .models import Mosaic, PairSet, Registration, RegistrationMethod, Scan, ScanStatus

log = logging.getLogger(__name__)


def queue_mosaic(scan: Scan, *, flatfield: str = "estimate") -> Mosaic:
    if scan.frames.count() == 0:
        raise DomainError("The scan has no frames to stitch yet.", field="scan", code="empty")
    from . import tasks

    with transaction.atomic():
        mosaic = Mosaic.objects.create(scan=scan, options={"flatfield": flatfield})
        enqueue_after_commit(tasks.stitch_mosaic, mosaic)
    return mosaic


def queue_registration(mosaic: Mosaic, sem, *, method: str, landmarks: list, user=None) -> Registration:
    if mosaic.status != JobStatus.SUCCEEDED:
        raise DomainError("The mosaic is not ready yet.", field="mosaic", code="invalid_state")
    if sem.project_id != mosaic.scan.project_id:
        raise DomainError("The SEM image belongs to another project.", field="sem_image")
    if method == RegistrationMethod.LANDMARKS:
        from .registration import check_landmarks

        try:
            check_landmarks(landmarks)
        except ValueError as exc:
            raise DomainError(str(exc), field="landmarks") from None
    from . import tasks

    with transaction.atomic():
        registration = Registration.objects.create(mosaic=mosaic, sem_image=sem, method=method, landmarks=landmarks,
                                                   created_by=user)
        enqueue_after_commit(tasks.register_images, registration)
    return registration


def accept_registration(registration: Registration) -> None:
    if registration.status != JobStatus.SUCCEEDED:
        raise InvalidTransition("Only a successful registration can be accepted.")
    Registration.objects.filter(pk=registration.pk).update(accepted=True)
    events.publish(events.topic_for("registration", registration.pk), "registration.accepted")


def queue_pairs(registration: Registration, *, pixel_size_nm=None, tile_px=512, stride_px=None, test_fraction=0.2) -> PairSet:
    if registration.status != JobStatus.SUCCEEDED:
        raise DomainError("The registration has not succeeded.", field="registration", code="invalid_state")
    from . import tasks

    with transaction.atomic():
        pair_set = PairSet.objects.create(registration=registration, pixel_size_nm=pixel_size_nm, tile_px=tile_px,
                                          stride_px=stride_px or tile_px, test_fraction=test_fraction)
        enqueue_after_commit(tasks.extract_pairs, pair_set)
    return pair_set


def queue_sem_pyramid(sem) -> None:
    from . import tasks

    transaction.on_commit(lambda: tasks.build_sem_pyramid.enqueue(sem.pk))


def scan_finished(scan: Scan) -> bool:
    return scan.status in (ScanStatus.COMPLETED, ScanStatus.ABORTED, ScanStatus.FAILED)
