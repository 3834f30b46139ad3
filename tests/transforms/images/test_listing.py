"""Listing a glob's files in shards: every file Beam's own match finds, exactly once, with its size."""

import json
import os
import pathlib
import uuid

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.runners.runner import PipelineResult

from testing import emulators
from testing.cloud_fixtures import BUCKET
from transforms.images import listing
from transforms.images.listing import SCHEMA, ListFiles, NoMatchesError

LOCAL_FILES = ['a.jpg', 'b.png', 'B.JPG', 'notes.txt', '1.2.840.10008.1', 'scan', 'x/c.jpg', 'x/y/d.dcm',
               'x/y/z/e.jpeg', 'x/f.txt', 'w[1]/g.png', 'v1/h.jpg', 'v2/i.jpg', 'v22/j.jpg']


def _beam_match(pattern: str) -> set[tuple[str, int]]:
  return {(m.path, m.size_in_bytes) for m in FileSystems.match([pattern])[0].metadata_list}


def _listed(pattern: str, extensions=None) -> list[tuple[str, int]]:
  return [item for shard in listing.split_listing(pattern) for item in listing.list_shard(shard, pattern, extensions)]


def _save(batch: pa.RecordBatch, folder: str) -> None:
  with pa.OSFile(os.path.join(folder, f'{uuid.uuid4().hex}.arrow'), 'wb') as f, pa.ipc.new_file(f, batch.schema) as w:
    w.write_batch(batch)


def _run(pattern: str, folder: pathlib.Path, **kwargs) -> tuple[list[pa.RecordBatch], PipelineResult]:
  """ListFiles on the DirectRunner: the batches it yields (saved to `folder`, one file each) and its result."""
  folder.mkdir()
  p = test_pipeline.TestPipeline()
  _ = p | ListFiles(pattern, **kwargs) | beam.Map(_save, str(folder))
  result = p.run()
  result.wait_until_finish()
  return [pa.ipc.open_file(str(path)).get_batch(0) for path in sorted(folder.iterdir())], result


def _counter(result, name: str) -> int:
  found = result.metrics().query(MetricsFilter().with_name(name))['counters']
  return sum(c.committed for c in found)


def _rows(batches) -> list[tuple[str, int]]:
  table = pa.Table.from_batches(batches, schema=SCHEMA)
  return list(zip(table['uri'].to_pylist(), table['size_bytes'].to_pylist()))


@pytest.fixture
def local_tree(tmp_path) -> pathlib.Path:
  tree = tmp_path / 'tree'
  for i, name in enumerate(LOCAL_FILES):
    (tree / name).parent.mkdir(parents=True, exist_ok=True)
    (tree / name).write_bytes(b'x' * i)
  (tree / 'empty').mkdir()
  (tree / 'linked').symlink_to(tree / 'x')  # Beam's walk does not follow a folder link
  return tree


@pytest.mark.parametrize('glob', ['*', '**', '*/*.jpg', '**.jpg', 'x/**', 'v?/*', 'v[12]*/*', 'v[!1]/*', '?.*',
                                  'x/y/', 'w[1]/*', 'nothing*'])
def test_split_listing__same_files_as_beam_match(local_tree, glob):
  pattern = f'{local_tree}/{glob}'
  listed = _listed(pattern)
  assert len(listed) == len(set(listed))
  assert set(listed) == _beam_match(pattern)


def test_split_listing__one_shard_per_local_sub_folder(local_tree):
  shards = listing.split_listing(f'{local_tree}/**')
  assert [s.kind for s in shards].count('local_files') == 1
  assert sorted(os.path.basename(s.prefix) for s in shards if s.kind == 'local_tree') == [
      'empty', 'v1', 'v2', 'v22', 'w[1]', 'x']


def test_list_files__keeps_image_extensions_and_names_without_one(local_tree, tmp_path):
  batches, result = _run(f'{local_tree}/**', tmp_path / 'out')
  assert all(b.schema.equals(SCHEMA) for b in batches)
  names = sorted(os.path.relpath(uri, local_tree) for uri, _ in _rows(batches))
  assert names == sorted(['a.jpg', 'b.png', 'B.JPG', '1.2.840.10008.1', 'scan', 'x/c.jpg', 'x/y/d.dcm',
                          'x/y/z/e.jpeg', 'w[1]/g.png', 'v1/h.jpg', 'v2/i.jpg', 'v22/j.jpg'])
  assert _counter(result, 'files_listed') == len(names)
  assert _counter(result, 'listing_shards') == 7


def test_list_files__batches_hold_at_most_batch_rows(local_tree, tmp_path):
  batches, _ = _run(f'{local_tree}/**', tmp_path / 'out', extensions=None, batch_rows=3)
  assert max(b.num_rows for b in batches) == 3
  assert set(_rows(batches)) == _beam_match(f'{local_tree}/**')


def test_extension_of__numeric_suffix_is_no_extension():
  assert [listing.extension_of(n) for n in ['gs://b/a.JPG', '/d/1.2.840.1', 'scan', 'x.tar.gz', 'd.v/scan']] == [
      '.jpg', '', '', '.gz', '']


def test_check_pattern__names_a_match_or_says_none(local_tree):
  assert listing.check_pattern(f'{local_tree}/x/*.jpg') == f'{local_tree}/x/c.jpg'
  with pytest.raises(NoMatchesError, match=r'x/\*\.txt matches no file with extension'):
    listing.check_pattern(f'{local_tree}/x/*.txt')
  assert listing.check_pattern(f'{local_tree}/x/*.txt', extensions=None) == f'{local_tree}/x/f.txt'
  with pytest.raises(NoMatchesError):
    listing.check_pattern(f'{local_tree}/missing/**')


def test_list_files__a_run_that_finds_nothing_fails(local_tree, tmp_path):
  with pytest.raises(Exception, match='matched no file when the job listed it'):
    _run(f'{local_tree}/*.bmp', tmp_path / 'out')


# Names on both sides of every shard's bounds: ASCII, a control character, not ASCII, and a name
# that is the prefix every other name under exact/ shares. (The emulator stores objects as files, so
# it cannot hold both `img` and `img/a.jpg`.)
GCS_NAMES = ['img/a.jpg', 'img/b/c.png', 'img/b/d/e.dcm', 'img/ümlaut.jpg', 'img/\x01ctl.jpg', 'img/~tilde.jpg',
             'imgs.jpg', 'im.jpg', 'img/Z.txt', 'img/1.2.3.4', 'exact/p.jpg', 'exact/p.jpg2', 'exact/p.jpg3']


def test_gcs_split_listing__same_objects_as_beam_match(gcs_prefix):
  for i, name in enumerate(GCS_NAMES):
    with FileSystems.create(f'{gcs_prefix}/{name}') as f:
      f.write(b'x' * i)
  assert 'gcs_object' in {s.kind for s in listing.split_listing(f'{gcs_prefix}/exact/*')}
  for glob in ['**', 'img/*', 'img/**', 'im*', 'img/?.*', 'img/[a-c]*', 'img*', 'exact/*', 'exact/*2']:
    pattern = f'{gcs_prefix}/{glob}'
    listed = _listed(pattern)
    assert len(listed) == len(set(listed)), glob
    assert set(listed) == _beam_match(pattern), glob


def test_gcs_split_listing__starts_after_the_longest_common_prefix(gcs_prefix):
  for name in ['scan_0001.dcm', 'scan_0002.dcm', 'scan_0101.dcm']:
    with FileSystems.create(f'{gcs_prefix}/{name}') as f:
      f.write(b'x')
  shards = listing.split_listing(f'{gcs_prefix}/*.dcm')
  prefixes = {s.prefix for s in shards if s.kind == 'gcs' and s.start is None}
  assert f'{gcs_prefix}/scan_00' in prefixes and f'{gcs_prefix}/scan_01' in prefixes
  assert listing.check_pattern(f'{gcs_prefix}/*.dcm') == f'{gcs_prefix}/scan_0001.dcm'


# ---- 100,000 objects: written straight into a fresh emulator's storage, which reads it as it starts.

MANY = 100_000


def seed_emulator(work_dir: pathlib.Path, bucket: str, objects: dict[str, int]) -> None:
  """The emulator's disk layout (objects_root/BUCKET/NAME and its `.meta` index) for `objects` (name: size)."""
  root = work_dir / 'gcs' / '.cloudstorage'
  now = '2026-01-01T00:00:00.000000Z'
  index = {}
  for name, size in objects.items():
    (root / bucket / name).parent.mkdir(parents=True, exist_ok=True)
    (root / bucket / name).write_bytes(b'x' * size)
    index[name] = {'kind': 'storage#object', 'id': f'{bucket}/{name}/1', 'name': name, 'bucket': bucket,
                   'generation': '1', 'metageneration': '1', 'contentType': 'application/octet-stream',
                   'timeCreated': now, 'updated': now, 'size': str(size), 'acl': []}
  buckets = {bucket: {'kind': 'storage#bucket', 'id': bucket, 'name': bucket, 'timeCreated': now, 'updated': now,
                      'location': 'US', 'storageClass': 'STANDARD', 'metageneration': '1'}}
  (root / '.meta').write_text(json.dumps({'buckets': buckets, 'objects': {bucket: index}}))


def many_objects() -> dict[str, int]:
  """MANY images named like a camera's, and a file in a sub-folder and a text file that `*.jpg` leaves out."""
  objects = {f'scans/img_{i:06d}.jpg': i % 97 for i in range(MANY)}
  return {**objects, 'scans/img_000001/inner.jpg': 5, 'scans/img_099999.txt': 7}


@pytest.fixture(scope='module')
def many_gcs(tmp_path_factory, anonymous_credentials):
  """A GCS emulator of its own holding `many_objects()` in BUCKET."""
  work_dir = tmp_path_factory.mktemp('many')
  seed_emulator(work_dir, BUCKET, many_objects())
  emulator = emulators.GcsEmulator(work_dir)
  try:
    with pytest.MonkeyPatch.context() as mp:
      mp.setenv('STORAGE_EMULATOR_HOST', emulator.endpoint)
      yield f'gs://{BUCKET}/scans/*.jpg'
  finally:
    emulator.stop()


@pytest.mark.slow
def test_list_files__100k_gcs_objects_each_once_in_parallel_shards(many_gcs, tmp_path):
  batches, result = _run(many_gcs, tmp_path / 'out')
  rows = _rows(batches)
  expected = {f'gs://{BUCKET}/{name}': size for name, size in many_objects().items()
              if name.endswith('.jpg') and '/' not in name[len('scans/'):]}
  assert len(expected) == MANY
  assert len(rows) == MANY and dict(rows) == expected  # each once, with its size
  assert max(b.num_rows for b in batches) <= 2000
  # The names share 'img_0', so the shards split at the digit after it: ten of 10,000 files each.
  assert _counter(result, 'listing_shards_with_files') == 10
