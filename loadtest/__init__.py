"""`make loadtest`: the relay under sustained load in front of a flaky Threatscore.

Run it with `python -m loadtest` (see `--help`); `tests/test_loadtest.py` runs
a shorter version of the same check in `make test`.
"""
