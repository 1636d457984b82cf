"""Celery apps shaped like the ones teams bring, for the tests of svc's adoption (tests/test_adoption.py)."""
