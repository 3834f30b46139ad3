"""The Dataflow job that a set of flags would submit, described without submitting it.

`python -m deploy.dataflow_job FLAGS... --dataflow_job_file=job.json` runs
DataflowRunner's own translation of the pipeline with Beam's `--dry_run`, which
stops before staging and before any API call, then fills in the job's
environment (worker pool, container image, service options, experiments, the
pipeline options the workers get) with Beam's `apiclient.Environment`, the
class the runner itself uses at submission. The plan is resolved offline
(`pipelines.launcher.resolve.resolve(offline=True)`): no input is listed or read, no table
is checked, no query is run and no read session is opened, so nothing here
contacts Google Cloud (except to read a gs:// model bundle), and tests and users
can check a GPU or CPU job before paying for one.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
  DebugOptions,
  GoogleCloudOptions,
  PipelineOptions,
  StandardOptions,
  TestOptions,
)
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.internal import apiclient
from apache_beam.runners.internal import names

from models.bundle import BundleError, ModelBundle
from pipelines.graph.batch_inference import build_pipeline
from pipelines.launcher.resolve import resolve


def _staged_names(pipeline_proto: beam_runner_api_pb2.Pipeline) -> list[str]:
  """The files the runner would stage for the workers (setup.py's sdist, ...)."""
  staged = []
  for env in pipeline_proto.components.environments.values():
    for dep in env.dependencies:
      if dep.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
        name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
        if name not in staged:
          staged.append(name)
  return staged


def describe_job(argv: Sequence[str], bundle: Optional[ModelBundle] = None) -> apiclient.Job:
  """Builds the Dataflow job for `argv` offline and returns it, environment included.

  Args:
    argv: the same flags `python -m pipelines.run` takes for DataflowRunner.
    bundle: the model bundle, when the caller has loaded it already.

  Returns:
    Beam's `apiclient.Job`: `.proto` is the request body the runner would send,
    `.proto_pipeline` the portable pipeline, `.json()` the body as JSON.
  """
  options = PipelineOptions(list(argv))
  options.view_as(StandardOptions).runner = 'DataflowRunner'
  options.view_as(TestOptions).dry_run = True
  temp_location = options.view_as(GoogleCloudOptions).temp_location or ''
  if not temp_location.startswith('gs://'):
    # Without it Beam looks up or creates a default bucket, which needs the network.
    raise ValueError(f'--temp_location must be a gs:// path to describe a Dataflow job, got {temp_location!r}')
  plan, _ = resolve(options, offline=True, bundle=bundle)
  pipeline = beam.Pipeline(options=options)
  build_pipeline(pipeline, plan)
  job = pipeline.run().job
  staging = job.google_cloud_options.staging_location
  job.proto.environment = apiclient.Environment(
      packages=_staged_names(job.proto_pipeline),
      options=job.options,
      environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,  # pylint: disable=protected-access
      proto_pipeline_staged_url=FileSystems.join(staging, names.STAGED_PIPELINE_FILENAME),
      proto_pipeline=job.proto_pipeline).proto
  return job


def main(argv: Optional[Sequence[str]] = None) -> int:
  logging.basicConfig(level=logging.WARNING)
  argv = list(sys.argv[1:] if argv is None else argv)
  if '--help' in argv or '-h' in argv:
    print(__doc__)
    return 0
  options = PipelineOptions(argv)
  job_file = options.view_as(DebugOptions).dataflow_job_file
  if not job_file:
    print(f'error: name the file to write with --dataflow_job_file\n{__doc__}', file=sys.stderr)
    return 2
  try:
    job = describe_job(argv)
  except (ValueError, BundleError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  with FileSystems.create(job_file) as f:
    f.write(job.json().encode('utf-8'))
  gcp = options.view_as(GoogleCloudOptions)
  print(f'Dataflow job {gcp.job_name} for project {gcp.project} described in {job_file} (not submitted).')
  return 0


if __name__ == '__main__':
  sys.exit(main())
