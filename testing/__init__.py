"""Helpers shared by the tests and the benchmarks: emulators, a PostgreSQL server, small models, input data.

Both tests/ and benchmarks/ import from here, so neither imports the other;
this package imports the project's packages and never tests/ or benchmarks/.
"""
