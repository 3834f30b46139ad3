"""A launch that does not wait and names no run id, as a Flex Template or a Cloud Scheduler launch runs,
exits 0 and says where its run will be."""

import os
import re
import subprocess
import sys

import pytest

from deploy import settings as deploy_settings
from models.examples.penguins import train
from transforms.files import publish

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_scheduled_launch__exits_0_and_prints_its_run_id_summary_and_status_command(tmp_path, penguin_bundle):
  out = tmp_path / 'out'
  settings = deploy_settings.Settings.from_values({'PROJECT': 'p', 'BUCKET': 'b', 'IMAGE': 'img'})
  # The body Cloud Scheduler posts: the template's parameters, each of which the template's launcher
  # passes to pipelines/run.py as --name=value (wait_for_job=false among them, no run_id).
  request = deploy_settings.launch_request(settings, 'nightly', deploy_settings.template_parameters(
      settings, [f'--input={train.EXAMPLE_DATA}', f'--model={penguin_bundle.path}', f'--output={out}']))
  parameters = request['launchParameter']['parameters']
  assert parameters['wait_for_job'] == 'false' and 'run_id' not in parameters
  flags = [f'--{name}={value}' for name, value in parameters.items()]
  env = {**os.environ, 'PYTHONPATH': ROOT}
  done = subprocess.run([sys.executable, '-m', 'pipelines.run', '--runner=DirectRunner', *flags],
                        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)

  assert done.returncode == 0, done.stdout + done.stderr
  assert 'Traceback' not in done.stdout + done.stderr
  [run_id] = re.findall(r'^Submitted run (\S+);', done.stdout, re.MULTILINE)
  assert re.search(rf'^  summary +{re.escape(publish.pointer_path(str(out), run_id))} ', done.stdout, re.MULTILINE)
  [command] = re.findall(r'^  status +(python -m pipelines\.record\.status .*)$', done.stdout, re.MULTILINE)
  said = subprocess.run([sys.executable, *command.split()[1:]], capture_output=True, text=True, env=env,
                        timeout=120, cwd=ROOT)  # the command it printed finds the run it launched
  assert said.returncode == 0 and said.stdout.startswith(f'Run {run_id}: DONE'), said.stdout + said.stderr
