"""The `mltransform` variant: the same features through Beam's `MLTransform` (tf.Transform), for reference.

    python -m benchmarks.mltransform --input 'DIR/*.parquet' --model BUNDLE --output DIR

Runs in its own virtualenv (build/bench/tft-venv, made by `./launch.sh bench`),
which adds tensorflow-transform on top of the pinned stack without changing it.
MLTransform fits its own statistics (z-scores, vocabularies) in an analysis
pass and then applies them; missing values are filled per row first, because
tf.Transform ops take no nulls. The model then runs as in `beam-textbook`.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.ml.transforms.base import MLTransform
from apache_beam.ml.transforms.tft import ComputeAndApplyVocabulary, ScaleToZScore
from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks.textbook import SignatureHandlerNumpy, postprocess
from models.bundle import ModelBundle
from models.inference import PredictionColumns
from transforms.features.spec import FeatureSpec
from transforms.features.preprocessing import FillMissing, OneHot, Vocabulary, ZScore


def fill_missing(row: dict, spec: FeatureSpec):
  """Fills optional values; drops rows missing a required one (counted), as validation would reject them."""
  out = {'id': str(row['id'])}
  for feature in spec.features:
    v = row.get(feature.name)
    if v is None and isinstance(feature.steps[0], FillMissing):
      v = feature.steps[0].value
    if v is None:
      beam.metrics.Metrics.counter('bench', 'rows_rejected').inc()
      return
    out[feature.name] = [v]
  yield out


def to_vector(row, spec: FeatureSpec):
  """MLTransform's columns (z-scores, vocabulary ids) side by side, one-hot where the model wants it."""
  values = []
  for feature in spec.features:
    v = np.asarray(getattr(row, feature.name)).reshape(-1)[0]
    last = feature.steps[-1]
    if isinstance(last, OneHot):
      hot = np.zeros(last.depth, np.float32)
      hot[min(max(int(v), 0), last.depth - 1)] = 1.0
      values.extend(hot)
    else:
      values.append(float(v))
  return row.id if isinstance(row.id, str) else str(np.asarray(row.id).reshape(-1)[0]), np.array(values, np.float32)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True)
  parser.add_argument('--model', required=True)
  parser.add_argument('--output', required=True)
  args, beam_args = parser.parse_known_args(argv)
  bundle = ModelBundle.load(args.model)
  spec = bundle.features
  scaled = [f.name for f in spec.features if any(isinstance(s, ZScore) for s in f.steps)]
  encoded = [f.name for f in spec.features if any(isinstance(s, Vocabulary) for s in f.steps)]
  columns = PredictionColumns(bundle.outputs, 'id', (), bundle.name, bundle.version, 'mltransform')
  schema = pa.schema([columns.schema.field(i).remove_metadata() for i in range(len(columns.schema))])
  with tempfile.TemporaryDirectory() as artifacts, beam.Pipeline(options=PipelineOptions(beam_args)) as p:
    _ = (p
         | 'Read' >> beam.io.ReadFromParquet(args.input, columns=['id'] + spec.columns)
         | 'FillMissing' >> beam.FlatMap(fill_missing, spec=spec)
         | 'MLTransform' >> MLTransform(write_artifact_location=artifacts)
         .with_transform(ScaleToZScore(columns=scaled))
         .with_transform(ComputeAndApplyVocabulary(columns=encoded))
         | 'ToVector' >> beam.Map(to_vector, spec=spec)
         | 'RunInference' >> RunInference(KeyedModelHandler(SignatureHandlerNumpy(bundle.saved_model_path)))
         | 'Postprocess' >> beam.Map(postprocess, columns=columns)
         | 'Write' >> beam.io.WriteToParquet(f'{args.output}/predictions', schema, file_name_suffix='.parquet'))
  print(json.dumps({'variant': 'mltransform'}))


if __name__ == '__main__':
  main()
