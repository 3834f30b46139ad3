"""Shared fixtures: a real trained example bundle, built once per test session."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from models.bundle import ModelBundle  # noqa: E402

# CI explores the same cases on every run, so a landing is never decided by the dice;
# a local run (no CI variable) draws new cases each time and finds new bugs.
settings.register_profile('ci', derandomize=True, print_blob=True)
if os.environ.get('CI'):
  settings.load_profile('ci')


@pytest.fixture(scope='session')
def penguin_bundle(tmp_path_factory) -> ModelBundle:
  """The example penguin classifier, trained for real (a few seconds)."""
  from models.examples.penguins import train
  return train.train(str(tmp_path_factory.mktemp('bundle') / 'penguins'), epochs=30)


from testing.postgres_server import postgres_server  # noqa: E402,F401  (a real PostgreSQL server, session-wide)
# Local GCS and BigQuery emulators, started only when a test asks for them.
from testing.cloud_fixtures import (  # noqa: E402,F401
    anonymous_credentials, bigquery_emulator, bq_client, bq_dataset, emulator_dir, gcs, gcs_prefix)


@pytest.fixture(scope='session')
def recommender_bundle(tmp_path_factory) -> ModelBundle:
  """The example recommender (top car makes), trained for real on vega_datasets' cars."""
  from models.examples.recommender import train
  return train.train(str(tmp_path_factory.mktemp('bundle') / 'car-makes'), epochs=40)
