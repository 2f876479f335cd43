"""Helpers shared by several unit-test modules (house rule 9: no test module imports
another). Fixtures live in ``tests/unit/conftest.py``; plain functions, classes and
constants here, one module per thing they drive."""
