"""Ingest jobs: stored before the API answers 202, run by a service thread or a Celery fleet.

See :mod:`service.jobs.service` for the entry point and :mod:`service.jobs.celery_app` for the
fleet's guarantees.
"""

from .model import BatchOutcome, Job, JobState, Problem
from .service import JobFinished, JobNotFound, JobService, JobsUnavailable, build_job_service

__all__ = [
    "BatchOutcome",
    "Job",
    "JobFinished",
    "JobNotFound",
    "JobService",
    "JobState",
    "JobsUnavailable",
    "Problem",
    "build_job_service",
]
