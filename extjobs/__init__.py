"""extjobs: a job-queue master for virtualisation clusters on external shared storage."""
