"""extjobs: a job-queue master for virtualisation clusters on external shared storage."""

__version__ = "0.1.0"
