"""`--estimate`: forecast a run's wall time and cost on Dataflow before launching it.

On the launcher, the job itself runs on a sample of the input (the first
`--estimate_rows` rows) and on the sample repeated REPLICAS times, on the
DirectRunner, after a warm-up run. The difference between the two gives the cost of a row apart from
start-up: rows per CPU-second (per core), and wall rows/s here. The model is
also timed alone on the sample, so a GPU worker's rate can be forecast with the
model off its CPUs. Bytes per row come from the input files and the sample's
prediction files.

From those, for each machine type of the dated price table (`pipelines.launcher.prices`)
and worker count: wall = start-up + rows / (workers × vCPUs × per-core rate) +
publish, cost = workers × hourly price × wall. The forecast of the whole input
here (printed, and in estimate.json) adds what a process pays before its first
row: its imports (measured in this process), the first load of the bundle and
the first pipeline (the cold resolve and warm-up run, less a warm run's share).
A file output's publish is in the sample runs; a table output's load is not
(the samples write files), so it is PUBLISH_SECONDS_PER_MILLION_ROWS. The estimate gives the chosen setting
(`--machine_type`, `--max_num_workers`/`--num_workers`, a GPU in
`--dataflow_service_options=worker_accelerator=type:...`) and the cheapest one
that meets `--deadline`, as a page with a chart (`estimate.html`).

For an image model the sample is the glob's first files, copied; the image step (read, decode,
resize) is timed alone too, and the estimate says how many cores keep one GPU busy at a few GPU
rates (GPU_IMAGES_PER_SECOND): a GPU's own rate for the model is not measured here.

Assumptions, stated on the page: a Dataflow vCPU runs as fast as a core here;
work spreads evenly over workers; a GPU takes the model off the CPUs and is not
the bottleneck; workers take DATAFLOW_STARTUP_SECONDS to start; shuffle is
negligible (the job shuffles only small combiner states).
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import logging
import os
import re
import shutil
import tempfile
import time
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, WorkerOptions

from models.handlers import load_predictor
from pipelines.launcher import prices
from pipelines.destinations import kind_of
from pipelines.launcher.resolve import resolve
from pipelines.options import BatchInferenceOptions, new_run_id
from transforms.files import publish
from pipelines.record.charts import embed_png as embed, figure, png
from pipelines.record.summary import RunJob
from transforms.rows import dead_letters as dl
from transforms.rows.dead_letters import Rejected
from transforms.files.readers import infer_format, open_file, read_file
from transforms.rows.validation import validate

ESTIMATE_FILE = 'estimate.html'
# An assumption, not a measurement: a Dataflow batch job's workers take minutes to boot and pull the image.
DATAFLOW_STARTUP_SECONDS = 180.0
WORKER_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
WARM_UP_ROWS = 1000
# Each sample size runs this many times, interleaved; the fastest of each counts (the others met noise).
REPEATS = 2
# The larger sample run repeats the sample this many times: enough rows that their cost stands clear of
# start-up's noise (at hundreds of thousands of rows/s per core, a few thousand rows cost milliseconds).
REPLICAS = 8
# An assumption, from benchmarks/: a table output's publish per million rows (a load job, a COPY and merge),
# which the sample runs, writing files here, do not measure. A file output publishes a pointer: measured.
PUBLISH_SECONDS_PER_MILLION_ROWS = {'BigQueryTable': 6.0, 'PostgresTable': 8.0}
# GPU rates (images/s for the bundle's model) the estimate gives the CPU cores for: a GPU's rate is not
# measured here, only each core's rate of preparing images for it.
GPU_IMAGES_PER_SECOND = (500, 2000, 10000)
# Flags of the run that the sample runs drop or replace: they run here, on a sample, publishing nothing.
# The rest stand, --report included, so that the samples cost what the run will.
_SAMPLE_DROPS = ('--estimate', '--deadline', '--input=', '--input_format', '--output', '--run_id', '--gate',
                 '--only_unscored', '--row_version_column', '--replay', '--watch', '--wait_for_job',
                 '--dead_letter', '--summary_location', '--runner', '--preflight_only', '--quiet')


def parse_duration(text: str) -> float:
  """Seconds in '90', '90s', '45m', '2h' or '1h30m'; ValueError otherwise."""
  if re.fullmatch(r'\d+(\.\d+)?', text.strip()):
    return float(text)
  parts = re.fullmatch(r'\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*', text)
  if not parts or not any(parts.groups()):
    raise ValueError(f'--deadline {text!r}: give a duration like 90s, 45m, 2h or 1h30m')
  h, m, s = (float(g or 0) for g in parts.groups())
  return h * 3600 + m * 60 + s


@dataclasses.dataclass(frozen=True)
class Measured:
  """What the sample runs measured on this machine."""
  sample_rows: int
  small_rows: int
  wall_seconds: tuple[float, float]  # the small and the full sample run
  cpu_seconds: tuple[float, float]
  model_cpu_seconds_per_row: float
  input_rows: int
  input_bytes: int
  output_bytes_per_row: float
  startup_seconds: float = 0.0  # a process's imports, first bundle load and first pipeline, before its rows
  publish_seconds_per_row: float = 0.0  # a table output's load, which the sample runs do not do
  decode_cpu_seconds_per_row: float = 0.0  # an image model's: reading, decoding and resizing one image

  def cores_per_gpu(self, gpu_rows_per_second: float) -> int:
    """Cores whose reading, decoding and the rest of the job, the model aside, keep a GPU that predicts
    `gpu_rows_per_second` busy."""
    return max(1, int(np.ceil(gpu_rows_per_second / self.rows_per_cpu_second_without_model)))

  @property
  def separated(self) -> bool:
    """Whether the larger sample cost clearly more than the smaller one, so start-up can be told apart."""
    return (self.cpu_seconds[1] - self.cpu_seconds[0] > 0.1 * self.cpu_seconds[1]
            and self.wall_seconds[1] - self.wall_seconds[0] > 0.1 * self.wall_seconds[1])

  @property
  def rows_per_cpu_second(self) -> float:
    """Per core: the marginal rows per CPU-second of the whole job (start-up excluded); when the sample is
    too small to tell, the full sample's rate with its start-up (a conservative bound)."""
    if not self.separated:
      return self.sample_rows / self.cpu_seconds[1]
    return (self.sample_rows - self.small_rows) / (self.cpu_seconds[1] - self.cpu_seconds[0])

  @property
  def rows_per_wall_second(self) -> float:
    if not self.separated:
      return self.sample_rows / self.wall_seconds[1]
    return (self.sample_rows - self.small_rows) / (self.wall_seconds[1] - self.wall_seconds[0])

  @property
  def fixed_wall_seconds(self) -> float:
    """The run's start-up and finish here, apart from its rows."""
    return max(self.wall_seconds[0] - self.small_rows / self.rows_per_wall_second, 0.0)

  @property
  def rows_per_cpu_second_without_model(self) -> float:
    """Per core, with the model elsewhere (on a GPU)."""
    other = 1 / self.rows_per_cpu_second - self.model_cpu_seconds_per_row
    return 1 / other if other > 0 else self.rows_per_cpu_second

  @property
  def input_bytes_per_row(self) -> float:
    return self.input_bytes / self.input_rows if self.input_rows else 0.0

  def publish_seconds(self, rows: int) -> float:
    return rows * self.publish_seconds_per_row

  def local_wall_seconds(self, rows: int) -> float:
    """A forecast of the whole run as a process on the DirectRunner, on this machine: its start-up, the
    run's fixed part, its rows, and a table output's publish."""
    return self.startup_seconds + self.fixed_wall_seconds + rows / self.rows_per_wall_second + \
        self.publish_seconds(rows)


def forecast(measured: Measured, machine: prices.Machine, workers: int, rows: int) -> dict[str, Any]:
  """Wall time and cost of `rows` on `workers` workers of `machine`."""
  per_core = measured.rows_per_cpu_second_without_model if machine.gpu else measured.rows_per_cpu_second
  rate = workers * machine.vcpus * per_core
  wall = DATAFLOW_STARTUP_SECONDS + rows / rate + measured.publish_seconds(rows)
  cost = workers * machine.hourly * max(wall, prices.MINIMUM_SECONDS) / 3600
  return {'machine': machine.name, 'vcpus': machine.vcpus, 'gpu': machine.gpu, 'workers': workers,
          'rows_per_second': rate, 'wall_seconds': wall, 'cost_usd': cost, 'hourly_usd': machine.hourly}


def candidates(measured: Measured, rows: int, *, max_workers: int = 1000) -> list[dict[str, Any]]:
  return [forecast(measured, m, w, rows) for m in prices.MACHINES.values() for w in WORKER_COUNTS if w <= max_workers]


def suggest(options: list[dict[str, Any]], deadline: Optional[float]) -> Optional[dict[str, Any]]:
  """The cheapest setting whose wall time meets the deadline (the fastest among equals); None if none does."""
  meeting = [c for c in options if deadline is None or c['wall_seconds'] <= deadline]
  return min(meeting, key=lambda c: (round(c['cost_usd'], 4), c['wall_seconds'])) if meeting else None


def chosen_setting(options: PipelineOptions) -> tuple[prices.Machine, int, str]:
  """The machine, worker count and GPU the flags choose, and a note on defaults taken."""
  workers_opts = options.view_as(WorkerOptions)
  notes = []
  name = workers_opts.machine_type or 'n1-standard-1'
  if not workers_opts.machine_type:
    notes.append('no --machine_type: n1-standard-1, Dataflow\'s batch default')
  gpu = None
  for option in options.view_as(GoogleCloudOptions).dataflow_service_options or []:
    found = re.search(r'worker_accelerator=type:([^;]+)', option)
    if found:
      gpu = found.group(1)
  workers = workers_opts.max_num_workers or workers_opts.num_workers
  if not workers:
    workers = 1
    notes.append('no --num_workers or --max_num_workers: 1 worker')
  return prices.machine(name, gpu), workers, '; '.join(notes)


def _replicas(table: pa.Table, key_column: Optional[str]) -> pa.Table:
  """The sample REPLICAS times over; with a key column, each copy's keys made its own (`KEY#r2`), so the
  repeated sample is no run of duplicate keys, which the job would reject."""
  if not key_column or key_column not in table.column_names:
    return pa.concat_tables([table] * REPLICAS)
  index = table.column_names.index(key_column)
  keys = table.column(key_column).cast(pa.string())
  copies = [table.set_column(index, key_column, keys if r == 0 else pc.binary_join_element_wise(
      keys, pa.scalar(f'#r{r}'), '')) for r in range(REPLICAS)]
  return pa.concat_tables(copies)


def _sample(pattern: str, file_format: Optional[str], rows: int, folder: str,
            key_column: Optional[str] = None) -> tuple[list[str], int, int]:
  """Writes the first `rows` rows of the input as Parquet (also repeated REPLICAS times), each sample in
  as many files as the input has (at most REPLICAS): a run of several files costs more than one of a
  single file of the same rows (measured: about 1 s more for 400,000 rows in 4 files here), which
  the forecast must see. Returns the warm-up's, the sample's and the repeated sample's file patterns,
  the input's row count (Parquet: its metadata; else bytes / sample bytes per row), and bytes."""
  files = sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path)
  if not files:
    raise ValueError(f'--estimate: no files match {pattern}')
  total_bytes = sum(m.size_in_bytes for m in files)
  batches, taken, read_bytes, whole_files_rows = [], 0, 0, 0
  for m in files:
    fmt = file_format or infer_format(m.path)
    in_file = 0
    with open_file(m.path, fmt) as f:
      for item in read_file(f, m.path, fmt, batch_size=8192):
        if isinstance(item, Rejected):
          continue
        keep = [n for n in item.schema.names if n not in (dl.SOURCE, dl.ROW)]
        batches.append(item.select(keep))
        in_file += item.num_rows
        taken += item.num_rows
        if taken >= rows:
          break
    if taken >= rows:
      break
    read_bytes += m.size_in_bytes
    whole_files_rows += in_file
  if all((file_format or infer_format(m.path)) == 'parquet' for m in files):
    input_rows = sum(pq.read_metadata(FileSystems.open(m.path, compression_type='uncompressed')).num_rows
                     for m in files)
  else:  # rows of the files read whole, scaled to the input's bytes
    input_rows = round(total_bytes * whole_files_rows / read_bytes) if read_bytes else taken
  table = pa.Table.from_batches(batches).slice(0, rows)
  table = table.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]))
  paths, spread = [], min(len(files), REPLICAS)
  for name, part, parts in (('warm', table.slice(0, WARM_UP_ROWS), 1), ('small', table, spread),
                            ('large', _replicas(table, key_column), spread)):
    sample = os.path.join(folder, f'sample-{name}')
    os.makedirs(sample)
    step = -(-part.num_rows // parts)
    for i in range(parts):
      pq.write_table(part.slice(i * step, step), os.path.join(sample, f'part-{i}.parquet'))
    paths.append(os.path.join(sample, '*.parquet'))
  return paths, input_rows, total_bytes


def _sample_images(pattern: str, rows: int, folder: str) -> tuple[list[str], int, int]:
  """An image glob's first `rows` files copied into a warm-up, a sample and the sample REPLICAS times over
  (as `_sample` does for rows); their globs, and the input's file count and bytes."""
  files = sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path)
  if not files:
    raise ValueError(f'--estimate: no files match {pattern}')
  taken = files[:rows]
  paths = []
  for name, count, copies in (('warm', min(WARM_UP_ROWS, len(taken)), 1), ('small', len(taken), 1),
                              ('large', len(taken), REPLICAS)):
    sample = os.path.join(folder, f'sample-{name}')
    os.makedirs(sample)
    for i, m in enumerate(taken[:count]):
      with FileSystems.open(m.path, compression_type='uncompressed') as f:
        data = f.read()
      extension = os.path.splitext(m.path)[1]
      for copy in range(copies):
        with open(os.path.join(sample, f'{i:06d}-{copy}{extension}'), 'wb') as out:
          out.write(data)
    paths.append(os.path.join(sample, '*'))
  return paths, len(files), sum(m.size_in_bytes for m in files)


def _image_seconds_per_row(bundle, sample: str, max_rows: int) -> tuple[float, float]:
  """CPU seconds per image of reading, decoding and resizing it, and of the model call alone, on the sample."""
  from transforms.images.errors import ImageError
  from transforms.images.prepare import load
  from transforms.images.tensors import shape_groups, to_tensor
  images, start = [], time.process_time()
  for path in sorted(FileSystems.match([sample])[0].metadata_list, key=lambda m: m.path):
    try:
      images.append(load(path.path, bundle.images))
    except ImageError:
      continue
  decode = (time.process_time() - start) / max(len(images), 1)
  if not images:
    return decode, 0.0
  model = load_predictor(bundle.format, bundle.model_path, bundle.outputs, 'cpu', bundle.load_options, bundle.inputs)
  tensors = [to_tensor([images[i] for i in group[s:s + max_rows]], bundle.images)
             for group in shape_groups(images) for s in range(0, len(group), max_rows)]
  model.predict({bundle.images.tensor: tensors[0][:2]})  # traced once, outside the timing
  start = time.process_time()
  for tensor in tensors:
    model.predict({bundle.images.tensor: tensor})
  return decode, (time.process_time() - start) / len(images)


def _sample_argv(argv: Sequence[str], sample: str, out: str, run_id: str) -> list[str]:
  kept = [a for a in argv if not any(a == d or a.startswith(d + ('' if d.endswith('=') else '=')) or a == d.rstrip('=')
                                     for d in _SAMPLE_DROPS)]
  # The run's own --report stands: drawing the report is part of what the run will cost.
  return kept + [f'--input={sample}', f'--output={out}', f'--run_id={run_id}', '--quiet']


def _model_seconds_per_row(bundle, sample: str, max_rows: int) -> float:
  """CPU seconds per row of the model call alone, on the sample's valid rows."""
  table = pq.read_table(os.path.dirname(sample))
  batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
  if batch is None:
    return 0.0
  batch = batch.append_column('__estimate_key', pa.array(np.arange(batch.num_rows)))
  valid, _ = validate(batch, bundle.features, key_column='__estimate_key')
  matrix = bundle.features.transform(valid)
  model = load_predictor(bundle.format, bundle.model_path, bundle.outputs, 'cpu', bundle.load_options)
  model.predict(matrix[:min(len(matrix), 16)])  # traced once, outside the timing
  start = time.process_time()
  for i in range(0, len(matrix), max_rows):
    model.predict(matrix[i:i + max_rows])
  return (time.process_time() - start) / max(len(matrix), 1)


def _text_seconds_per_row(bundle, sample: str, max_rows: int) -> float:
  """CPU seconds per text of the model call alone, on the sample's texts tokenised and cut as the job cuts them."""
  from transforms.text import tokens
  from transforms.text.prepare import read_tokenizer, unusable
  spec = bundle.text
  texts = pq.read_table(os.path.dirname(sample), columns=[bundle.text_column]).column(0).combine_chunks()
  empty, too_long = unusable(texts, spec.max_bytes)
  kept = [t for t, bad in zip(texts.to_pylist(), empty | too_long) if not bad]
  if not kept:
    return 0.0
  tokenizer = read_tokenizer(bundle.tokenizer_path, spec)
  encoded = tokens.encode(tokenizer, kept)
  calls = [tokens.pad(encoded, call, spec, tokens.pad_id(tokenizer))
           for call in tokens.model_calls(encoded.lengths, spec.tokens_per_batch, max_rows)]
  model = load_predictor(bundle.format, bundle.model_path, bundle.outputs, 'cpu', bundle.load_options, bundle.inputs,
                         text=spec)
  model.predict({name: t[:2] for name, t in calls[0].items()})  # traced once, outside the timing
  start = time.process_time()
  for call in calls:
    model.predict(call)
  return (time.process_time() - start) / len(kept)


def process_seconds() -> float:
  """Seconds since this process started (its interpreter and imports included); 0 where /proc is missing."""
  try:
    with open('/proc/self/stat', 'rb') as f:
      stat = f.read()
    with open('/proc/uptime', 'rb') as f:
      uptime = float(f.read().split()[0])
  except (OSError, ValueError):
    return 0.0
  started = int(stat[stat.rindex(b')') + 2:].split()[19]) / os.sysconf('SC_CLK_TCK')
  return max(uptime - started, 0.0)


def measure(argv: Sequence[str], opts: BatchInferenceOptions, bundle, folder: str, run: RunJob, *,
            cold_seconds: float = 0.0) -> Measured:
  """Runs the job (`run`, the launcher's) on the sample here, on the DirectRunner: a warm-up, then the
  sample and the sample repeated REPLICAS times, REPEATS times each, interleaved. `cold_seconds`: what
  this process spent before the sample runs (imports, the first resolve), the start-up's first part."""
  images = opts.reads_image_files(bundle)
  sample = _sample_images if images else lambda p, r, f: _sample(p, opts.input_format, r, f, opts.key_column)
  paths, input_rows, input_bytes = sample(opts.input, opts.estimate_rows, folder)
  walls, cpus, rows = {0: [], 1: [], 2: []}, {0: [], 1: [], 2: []}, {}
  runs = [0] + [1, 2] * REPEATS  # a warm-up, then the two sizes interleaved
  for n, i in enumerate(runs):
    out = os.path.join(folder, f'out-{n}')
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    summary = run(_sample_argv(argv, paths[i], out, f'estimate-{n}'))
    walls[i].append(time.perf_counter() - start_wall)
    cpus[i].append(time.process_time() - start_cpu)
    rows[i] = summary.rows_read
  predictions = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(folder, f'out-{len(runs) - 1}'))
                 for f in fs if f.startswith('predictions-')]
  output_bytes = sum(os.path.getsize(p) for p in predictions)
  last = summary.rows_predicted or 1
  publish_per_row = PUBLISH_SECONDS_PER_MILLION_ROWS.get(kind_of(opts.output).__name__, 0.0) / 1e6 \
      if opts.output else 0.0
  if images:
    decode, model = _image_seconds_per_row(bundle, paths[1], opts.max_batch_rows)
  elif bundle.text is not None:
    decode, model = 0.0, _text_seconds_per_row(bundle, paths[1], opts.max_batch_rows)
  else:
    decode, model = 0.0, _model_seconds_per_row(bundle, paths[2], opts.max_batch_rows)
  warm = Measured(sample_rows=rows[2], small_rows=rows[1], wall_seconds=(min(walls[1]), min(walls[2])),
                  cpu_seconds=(min(cpus[1]), min(cpus[2])), model_cpu_seconds_per_row=model,
                  input_rows=input_rows, input_bytes=input_bytes, output_bytes_per_row=output_bytes / last,
                  publish_seconds_per_row=publish_per_row, decode_cpu_seconds_per_row=decode)
  # The warm-up was the process's first pipeline: what it took beyond a warm run of its rows is start-up too.
  first_run = max(walls[0][0] - warm.fixed_wall_seconds - rows[0] / warm.rows_per_wall_second, 0.0)
  return dataclasses.replace(warm, startup_seconds=cold_seconds + first_run)


def _hours(seconds: float) -> str:
  return str(datetime.timedelta(seconds=round(seconds)))


def chart(options: list[dict[str, Any]], chosen: dict[str, Any], best: Optional[dict[str, Any]],
          deadline: Optional[float]) -> bytes:
  """Cost against wall time of every setting, by machine type; the deadline, the chosen and the suggested."""
  fig, ax = figure(width=8.0, height=4.5)
  from matplotlib import colormaps
  for i, name in enumerate(dict.fromkeys(c['machine'] for c in options)):
    points = [c for c in options if c['machine'] == name]
    ax.plot([c['wall_seconds'] / 3600 for c in points], [c['cost_usd'] for c in points], marker='.', linewidth=0.8,
            label=name, color=colormaps['tab20'](i % 20), linestyle='--' if points[0]['gpu'] else '-')
  ax.scatter([chosen['wall_seconds'] / 3600], [chosen['cost_usd']], s=140, facecolors='none', edgecolors='black',
             linewidths=1.5, label='chosen', zorder=5)
  if best is not None:
    ax.scatter([best['wall_seconds'] / 3600], [best['cost_usd']], s=220, marker='*', color='#c0504d',
               label='suggested', zorder=6)
  if deadline is not None:
    ax.axvline(deadline / 3600, color='#c0504d', linestyle='--', linewidth=1)
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('forecast wall time (hours)')
  ax.set_ylabel('forecast cost (USD)')
  ax.set_title('Dataflow settings: cost against time')
  ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
  return png(fig)


def _usd(x: float) -> str:
  return f'${x:,.2f}' if x >= 1 else f'${x:.4f}'


def _row(c: dict[str, Any]) -> str:
  return (f'<tr><td>{html.escape(c["machine"])}</td><td>{c["workers"]}</td><td>{c["rows_per_second"]:,.0f}</td>'
          f'<td>{_hours(c["wall_seconds"])}</td><td>{_usd(c["cost_usd"])}</td></tr>')


def page(result: dict[str, Any], png: bytes) -> str:
  m, chosen, best = result['measured'], result['chosen'], result['suggested']
  e = html.escape
  deadline = result['deadline_seconds']
  verdict = ('<p>No setting meets the deadline.</p>' if best is None and deadline is not None else '')
  cheapest = sorted(result['candidates'], key=lambda c: c['cost_usd'])[:10]
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Estimate {e(result['run_id'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em}}td,th{{padding:.2em .7em;
border-bottom:1px solid #ddd;text-align:right}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}
</style></head><body>
<h1>Estimate for {e(result['input'])}</h1>
<p>Prices of {e(prices.PRICES_DATE)} ({e(prices.PRICES_SOURCE)}), {e(prices.REGION)}. Forecast made
{e(result['made_at'])}.</p>
<h2>Measured here</h2><table>
<tr><td>input</td><td>{m['input_rows']:,} rows, {m['input_bytes']:,} bytes ({m['input_bytes_per_row']:.1f} bytes/row)</td></tr>
<tr><td>sample runs</td><td>{m['small_rows']:,} and {m['sample_rows']:,} rows: {m['wall_seconds'][0]:.2f}s and
{m['wall_seconds'][1]:.2f}s</td></tr>
<tr><td>per core</td><td id="per-core">{m['rows_per_cpu_second']:,.0f} rows per CPU-second
({m['rows_per_cpu_second_without_model']:,.0f} with the model on a GPU)</td></tr>
<tr><td>output</td><td>{m['output_bytes_per_row']:.1f} bytes per predicted row</td></tr>
<tr><td>the whole input here (DirectRunner, as a process)</td><td>{_hours(m['local_wall_seconds'])}: start-up
{m['startup_seconds']:.1f}s, fixed {m['fixed_wall_seconds']:.1f}s, rows {m['local_rows_seconds']:.1f}s, publish
{m['publish_seconds']:.1f}s</td></tr></table>
<h2>Forecast on Dataflow</h2><table><tr><th>setting</th><th>workers</th><th>rows/s</th><th>wall</th><th>cost</th></tr>
<tr><th colspan="5">chosen{(' (' + e(result['chosen_note']) + ')') if result['chosen_note'] else ''}</th></tr>
{_row(chosen)}
<tr><th colspan="5">cheapest meeting the deadline{(' of ' + _hours(deadline)) if deadline else ''}</th></tr>
{_row(best) if best else '<tr><td colspan="5">none</td></tr>'}</table>{verdict}
{embed('estimate', png, 'forecast cost against wall time per Dataflow setting')}
<h3>The ten cheapest settings</h3><table><tr><th>setting</th><th>workers</th><th>rows/s</th><th>wall</th>
<th>cost</th></tr>{''.join(_row(c) for c in cheapest)}</table>
<p>Assumptions: a Dataflow vCPU runs as fast as a core of this machine; rows spread evenly over workers; a GPU
takes the model off the CPUs and is not the bottleneck; workers take {DATAFLOW_STARTUP_SECONDS:.0f}s to start;
shuffle is negligible. Each worker is billed per second, at least a minute.</p>
</body></html>
"""


def estimate(argv: Sequence[str], run: RunJob) -> dict[str, Any]:
  """Measures on a sample with `run` (`pipelines.run.run`), forecasts, writes estimate.json and
  estimate.html; returns the result."""
  options = PipelineOptions(list(argv))
  opts = options.view_as(BatchInferenceOptions)
  opts.run_id = opts.run_id or new_run_id()
  deadline = parse_duration(opts.deadline) if opts.deadline else None
  machine, workers, note = chosen_setting(options)
  resolving = PipelineOptions([a for a in argv if not a.startswith(('--estimate', '--deadline'))])
  plan, _ = resolve(resolving, check_only=True)  # the first resolve loads the bundle: part of start-up
  opts.max_batch_rows = resolving.view_as(BatchInferenceOptions).max_batch_rows  # the model calls resolve chose
  cold_seconds = process_seconds()
  folder = tempfile.mkdtemp(prefix='estimate-')
  try:
    measured = measure(argv, opts, plan.bundle, folder, run, cold_seconds=cold_seconds)
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  rows = measured.input_rows
  options_list = candidates(measured, rows)
  chosen = forecast(measured, machine, workers, rows)
  best = suggest(options_list, deadline)
  result = {
      'run_id': opts.run_id, 'input': opts.input, 'made_at': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'prices_date': prices.PRICES_DATE, 'prices_source': prices.PRICES_SOURCE, 'region': prices.REGION,
      'startup_seconds_assumed': DATAFLOW_STARTUP_SECONDS, 'deadline_seconds': deadline,
      'measured': {**dataclasses.asdict(measured), 'separated': measured.separated,
                   'rows_per_cpu_second': measured.rows_per_cpu_second,
                   'rows_per_cpu_second_without_model': measured.rows_per_cpu_second_without_model,
                   'rows_per_wall_second': measured.rows_per_wall_second,
                   'fixed_wall_seconds': measured.fixed_wall_seconds,
                   'input_bytes_per_row': measured.input_bytes_per_row,
                   'local_wall_seconds': measured.local_wall_seconds(rows),
                   'local_rows_seconds': rows / measured.rows_per_wall_second,
                   'publish_seconds': measured.publish_seconds(rows),
                   'cores_per_gpu': {str(r): measured.cores_per_gpu(r) for r in GPU_IMAGES_PER_SECOND}
                   if measured.decode_cpu_seconds_per_row else None},
      'chosen': chosen, 'chosen_note': note, 'suggested': best, 'candidates': options_list,
  }
  out = opts.estimate_output or FileSystems.join(
      (opts.records_location() or options.view_as(GoogleCloudOptions).temp_location or '.').rstrip('/'),
      '_estimates', opts.run_id)
  publish.write_json(FileSystems.join(out, 'estimate.json'), result)
  with FileSystems.create(FileSystems.join(out, ESTIMATE_FILE), mime_type='text/html') as f:
    f.write(page(result, chart(options_list, chosen, best, deadline)).encode('utf-8'))
  result['page'] = FileSystems.join(out, ESTIMATE_FILE)
  logging.info('estimate written to %s', result['page'])
  return result


def render(result: dict[str, Any]) -> str:
  m, chosen, best = result['measured'], result['chosen'], result['suggested']
  deadline = result['deadline_seconds']
  lines = [
      f'Estimate for {result["input"]}: {m["input_rows"]:,} rows, {m["input_bytes_per_row"]:.1f} bytes/row in, '
      f'{m["output_bytes_per_row"]:.1f} bytes/row out',
      f'  measured here   {m["rows_per_cpu_second"]:,.0f} rows/s per core '
      f'({m["rows_per_cpu_second_without_model"]:,.0f} with the model on a GPU), on a sample of '
      f'{m["small_rows"]:,} rows (and it {REPLICAS} times over)' + ('' if m['separated'] else ' (too small to tell start-up apart: the rate '
                                      'includes it; raise --estimate_rows)'),
      f'  here            {m["local_wall_seconds"]:,.1f}s for the whole input on the DirectRunner, as a process: '
      f'start-up {m["startup_seconds"]:.1f}s + fixed {m["fixed_wall_seconds"]:.1f}s + rows '
      f'{m["local_rows_seconds"]:.1f}s + publish {m["publish_seconds"]:.1f}s',
      f'  prices          {result["prices_date"]}, {result["region"]} ({result["prices_source"]})',
      f'  chosen          {chosen["workers"]} x {chosen["machine"]}: {_hours(chosen["wall_seconds"])}, '
      f'{_usd(chosen["cost_usd"])}' + (f' ({result["chosen_note"]})' if result['chosen_note'] else ''),
  ]
  if best is not None:
    within = f' within {_hours(deadline)}' if deadline else ''
    lines.append(f'  suggested       {best["workers"]} x {best["machine"]}: {_hours(best["wall_seconds"])}, '
                 f'{_usd(best["cost_usd"])} (the cheapest setting{within})')
  else:
    lines.append(f'  no setting meets the deadline of {_hours(deadline)}')
  if m.get('cores_per_gpu'):
    lines.append(f'  GPU feeding     one core prepares {1 / m["decode_cpu_seconds_per_row"]:,.0f} images/s for this bundle '
                 f'({m["rows_per_cpu_second_without_model"]:,.0f}/s with the rest of the job); a GPU predicting '
                 + ', '.join(f'{int(r):,}' for r in m['cores_per_gpu']) + ' images/s needs '
                 + ', '.join(str(c) for c in m['cores_per_gpu'].values()) + ' cores to stay busy')
  lines.append(f'  page            {result["page"]}')
  return '\n'.join(lines)
