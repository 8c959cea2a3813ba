"""Benchmarks of extjobs, reported as ratios against real alternatives measured in one run.

Run ``python -m bench --quick`` (about a minute) or ``python -m bench`` (the full set,
which also redraws ``docs/benchmarks-scaling.png`` and the results section of
``docs/benchmarks.md``). Results go to ``bench/results/`` as JSON; the last line printed
is one JSON object with the headline figures. See ``docs/benchmarks.md`` for the method.
"""
