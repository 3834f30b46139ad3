"""--estimate: the job runs here on a sample; the forecast follows from what it measured and the dated
price table, suggests the cheapest setting meeting the deadline, and draws a page that renders."""

import base64
import json
import math
import os
import re

import pyarrow.parquet as pq
import pytest

from testing.data import make_dataset
from pipelines import run as run_job
from pipelines.launcher import estimate, prices
from tests.pipelines.record.test_report import _browser, _png_size, _rendered_images


def _measured(**overrides) -> estimate.Measured:
  values = dict(sample_rows=80_000, small_rows=10_000, wall_seconds=(4.0, 5.0), cpu_seconds=(2.0, 2.7),
                model_cpu_seconds_per_row=2e-6, input_rows=10_000_000, input_bytes=500_000_000,
                output_bytes_per_row=20.0)
  return estimate.Measured(**{**values, **overrides})


def test_parse_duration():
  assert [estimate.parse_duration(t) for t in ('90', '90s', '45m', '2h', '1h30m')] == [90, 90, 2700, 7200, 5400]
  with pytest.raises(ValueError, match='like 90s, 45m'):
    estimate.parse_duration('soon')


def test_forecast__rate_wall_and_cost_follow_from_the_measured_rate_and_the_prices():
  m = _measured()
  assert m.rows_per_cpu_second == pytest.approx(70_000 / 0.7)
  assert m.rows_per_wall_second == pytest.approx(70_000)
  assert m.fixed_wall_seconds == pytest.approx(4.0 - 10_000 / 70_000)
  n2 = prices.machine('n2-standard-4')
  got = estimate.forecast(m, n2, 8, 10_000_000)
  rate = 8 * 4 * 100_000
  wall = estimate.DATAFLOW_STARTUP_SECONDS + 10_000_000 / rate
  assert got['rows_per_second'] == pytest.approx(rate) and got['wall_seconds'] == pytest.approx(wall)
  hourly = 4 * prices.VCPU_HOUR + 16 * prices.MEMORY_GB_HOUR + prices.BOOT_DISK_GB * prices.PD_GB_HOUR
  assert got['cost_usd'] == pytest.approx(8 * hourly * wall / 3600)
  # A GPU takes the model's 2 µs a row off the CPUs: 1 / (1/100,000 - 2e-6) = 125,000 rows/s per core.
  l4 = estimate.forecast(m, prices.machine('g2-standard-4'), 1, 10_000_000)
  assert l4['rows_per_second'] == pytest.approx(4 * 125_000)
  assert prices.machine('g2-standard-4').hourly == pytest.approx(
      4 * prices.VCPU_HOUR + 16 * prices.MEMORY_GB_HOUR + prices.BOOT_DISK_GB * prices.PD_GB_HOUR + 0.56)


def test_forecast__includes_start_up_here_and_a_table_output_s_publish():
  m = _measured(startup_seconds=3.5, publish_seconds_per_row=6e-6)
  rows = 1_000_000
  assert m.local_wall_seconds(rows) == pytest.approx(3.5 + (4.0 - 10_000 / 70_000) + rows / 70_000 + 6.0)
  plain = estimate.forecast(_measured(), prices.machine('n2-standard-4'), 2, rows)
  published = estimate.forecast(m, prices.machine('n2-standard-4'), 2, rows)
  assert published['wall_seconds'] == pytest.approx(plain['wall_seconds'] + 6.0)


def test_suggest__the_cheapest_setting_that_meets_the_deadline():
  m = _measured()
  options = estimate.candidates(m, 10_000_000_000)
  for deadline in (6 * 3600, 3600, 900):
    best = estimate.suggest(options, deadline)
    meeting = [c for c in options if c['wall_seconds'] <= deadline]
    assert best['wall_seconds'] <= deadline
    assert best['cost_usd'] == pytest.approx(min(c['cost_usd'] for c in meeting))
  assert estimate.suggest(options, 60) is None  # start-up alone takes longer


def test_chosen_setting__from_the_worker_flags():
  from apache_beam.options.pipeline_options import PipelineOptions
  machine, workers, note = estimate.chosen_setting(PipelineOptions([
      '--machine_type=n1-standard-4', '--max_num_workers=6',
      '--dataflow_service_options=worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver']))
  assert (machine.name, machine.gpu, workers, note) == ('n1-standard-4+nvidia-tesla-t4', 'nvidia-tesla-t4', 6, '')
  with pytest.raises(ValueError, match='not in the price table'):
    estimate.chosen_setting(PipelineOptions(['--machine_type=m1-ultramem-160']))


@pytest.mark.slow
def test_estimate__measures_a_sample_here_and_draws_the_forecast(tmp_path, penguin_bundle, capsys):
  make_dataset(str(tmp_path / 'in'), 60_000, rows_per_file=30_000)
  out = tmp_path / 'out'
  code = run_job.main([f'--input={tmp_path}/in/*.parquet', f'--model={penguin_bundle.path}', f'--output={out}',
                       '--run_id=plan', '--estimate', '--estimate_rows=4000', '--deadline=20m',
                       '--machine_type=n2-standard-4', '--max_num_workers=3'])
  printed = capsys.readouterr().out
  assert code == 0
  folder = out / '_estimates' / 'plan'
  assert os.listdir(out) == ['_estimates']  # nothing ran for real, nothing was published
  result = json.loads((folder / 'estimate.json').read_text())
  m = result['measured']
  files = sorted((tmp_path / 'in').glob('*.parquet'))
  assert m['input_rows'] == 60_000 == sum(pq.read_metadata(f).num_rows for f in files)
  assert m['input_bytes'] == sum(os.path.getsize(f) for f in files)
  assert (m['small_rows'], m['sample_rows']) == (4000, 4000 * estimate.REPLICAS)
  assert m['rows_per_cpu_second'] > 0 and m['output_bytes_per_row'] > 0
  # The local forecast is a process's: its start-up (this process's imports and first bundle load) comes first.
  assert m['startup_seconds'] > 0.5 and m['publish_seconds'] == 0  # a file output's publish is in the samples
  assert m['local_wall_seconds'] == pytest.approx(
      m['startup_seconds'] + m['fixed_wall_seconds'] + m['local_rows_seconds'] + m['publish_seconds'])
  assert f'here            {m["local_wall_seconds"]:,.1f}s for the whole input on the DirectRunner' in printed
  assert f'start-up {m["startup_seconds"]:.1f}s + ' in printed
  chosen = result['chosen']
  assert (chosen['machine'], chosen['workers']) == ('n2-standard-4', 3)
  assert chosen['rows_per_second'] == pytest.approx(3 * 4 * m['rows_per_cpu_second'])
  best = result['suggested']
  assert best['wall_seconds'] <= 1200
  assert best['cost_usd'] == min(c['cost_usd'] for c in result['candidates'] if c['wall_seconds'] <= 1200)
  assert result['prices_date'] == prices.PRICES_DATE
  assert f'prices          {prices.PRICES_DATE}, us-central1' in printed
  assert 'chosen          3 x n2-standard-4: ' in printed and 'suggested       ' in printed
  page = (folder / 'estimate.html').read_text()
  assert 'Prices of 2025-06-01' in page and 'id="chart-estimate"' in page
  if not _browser():
    pytest.skip('no Chromium here: the page was written and checked, but not rendered')
  images = _rendered_images(str(folder / 'estimate.html'), tmp_path)
  png = tmp_path / 'chart.png'
  png.write_bytes(base64.b64decode(re.search(r'base64,([^"]+)"', page).group(1)))
  width, height = _png_size(png)
  assert images['chart-estimate'] == f'{width}x{height}' and width > 300


def test_estimate__of_an_image_glob_samples_files_and_says_how_many_cores_keep_a_gpu_busy(tmp_path, capsys):
  from testing import images as ti
  from transforms.images.spec import ImageSpec, Resize
  spec = ImageSpec(resize=Resize('stretch', (32, 32)), layout='NCHW')
  bundle, _ = ti.torch_image_bundle(str(tmp_path / 'bundle'), spec, (None, 3, 32, 32), ('a', 'b'))
  paths = ti.write_images(str(tmp_path / 'in'), [(48, 64), (80, 80)], 90)
  out = tmp_path / 'out'
  code = run_job.main([f'--input={tmp_path}/in/*.jpg', f'--model={bundle.path}', f'--output={out}', '--run_id=img',
                       '--estimate', '--estimate_rows=30'])
  printed = capsys.readouterr().out
  assert code == 0
  m = json.loads((out / '_estimates' / 'img' / 'estimate.json').read_text())['measured']
  assert (m['input_rows'], m['small_rows'], m['sample_rows']) == (90, 30, 30 * estimate.REPLICAS)
  assert m['input_bytes'] == sum(os.path.getsize(p) for p in paths)
  assert m['decode_cpu_seconds_per_row'] > 0 and m['model_cpu_seconds_per_row'] > 0
  per_core = m['rows_per_cpu_second_without_model']
  assert m['cores_per_gpu'] == {str(r): max(1, math.ceil(r / per_core)) for r in estimate.GPU_IMAGES_PER_SECOND}
  assert 'GPU feeding     one core prepares ' in printed and 'cores to stay busy' in printed


def test_estimate__with_a_key_column_the_repeated_sample_keeps_its_keys_distinct(tmp_path, penguin_bundle, capsys):
  # The larger sample repeats the rows: with their keys as they are, every copy would be a duplicate key and the
  # sample run would fail (or measure rejections, not predictions).
  make_dataset(str(tmp_path / 'in'), 3000, rows_per_file=3000)
  code = run_job.main([f'--input={tmp_path}/in/*.parquet', f'--model={penguin_bundle.path}', '--key_column=id',
                       f'--output={tmp_path}/out', '--run_id=keyed', '--estimate', '--estimate_rows=500'])
  assert code == 0, capsys.readouterr().err
  m = json.loads((tmp_path / 'out' / '_estimates' / 'keyed' / 'estimate.json').read_text())['measured']
  assert (m['small_rows'], m['sample_rows']) == (500, 500 * estimate.REPLICAS)
  assert m['rows_per_cpu_second'] > 0


def test_estimate__of_a_text_model_times_its_model_on_the_samples_tokenised_texts(tmp_path, capsys):
  import pyarrow as pa
  from models.bundle import Outputs
  from testing import text as tt
  from transforms.text.spec import TextSpec
  texts = tt.corpus(200, seed=2)
  bundle, _ = tt.text_bundle(str(tmp_path / 'bundle'), TextSpec(max_tokens=48, pooling='mean'),
                             Outputs('embedding', dimension=32), texts)
  pq.write_table(pa.table({'id': list(range(len(texts))), 'text': texts}), tmp_path / 'texts.parquet')
  code = run_job.main([f'--input={tmp_path}/texts.parquet', f'--model={bundle.path}', '--key_column=id',
                       f'--output={tmp_path}/out', '--run_id=txt', '--estimate', '--estimate_rows=80'])
  assert code == 0, capsys.readouterr().err
  m = json.loads((tmp_path / 'out' / '_estimates' / 'txt' / 'estimate.json').read_text())['measured']
  assert (m['input_rows'], m['small_rows']) == (200, 80) and m['model_cpu_seconds_per_row'] > 0
