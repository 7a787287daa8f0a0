"""Fault injection: each scenario runs briefly in ``make test``, for longer in ``make stress``."""
