"""The `beam-textbook` variant: the per-element recipe from Beam's RunInference docs.

    python -m benchmarks.textbook --input 'DIR/*.parquet' --model BUNDLE --output DIR

One dict per row from `ReadFromParquet`, a per-row `preprocess` to a numpy
vector, `KeyedModelHandler` + `RunInference` with Beam's own batching of single
examples, a per-row `postprocess` to a dict, `WriteToParquet`. Beam's
`TFModelHandlerNumpy` needs `tensorflow_hub` and a Keras-loadable model; the
handler below does what it does (stack the examples, call the model, one
`PredictionResult` per example) for a plain SavedModel signature.
"""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from models.bundle import ModelBundle
from models.handlers.tensorflow import SavedModelPredictor
from models.inference import PredictionColumns
from transforms.features.spec import FeatureSpec
from transforms.features.preprocessing import FillMissing, MinMax, OneHot, Vocabulary, ZScore


class SignatureHandlerNumpy(ModelHandler[np.ndarray, PredictionResult, SavedModelPredictor]):
  """`TFModelHandlerNumpy` for a SavedModel signature: one example per element."""

  def __init__(self, model_uri: str):
    super().__init__()
    self._model_uri = model_uri

  def load_model(self) -> SavedModelPredictor:
    return SavedModelPredictor(self._model_uri)

  def run_inference(self, batch: Sequence[np.ndarray], model: SavedModelPredictor,
                    inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
    predictions = model.predict(np.stack(batch, axis=0))
    return [PredictionResult(x, y, self._model_uri) for x, y in zip(batch, predictions)]


class Preprocess(beam.DoFn):
  """One row dict to one feature vector, in plain Python, as the docs' examples do."""

  def __init__(self, spec: FeatureSpec):
    self._spec = spec

  def setup(self):
    self._index = {f.name: {t: i for s in f.steps if isinstance(s, Vocabulary) for i, t in enumerate(s.vocabulary)}
                   for f in self._spec.features}

  def process(self, row: dict):
    values = []
    for feature in self._spec.features:
      v = row.get(feature.name)
      for step in feature.steps:
        if isinstance(step, FillMissing):
          v = step.value if v is None else v
        elif v is None:
          beam.metrics.Metrics.counter('bench', 'rows_rejected').inc()
          return
        elif isinstance(step, ZScore):
          v = (float(v) - step.mean) / (step.std or 1.0)
        elif isinstance(step, MinMax):
          v = (float(v) - step.min) / ((step.max - step.min) or 1.0)
        elif isinstance(step, Vocabulary):
          v = self._index[feature.name].get(str(v), len(step.vocabulary))
        elif isinstance(step, OneHot):
          hot = [0.0] * step.depth
          hot[min(v, step.depth - 1)] = 1.0
          v = hot
      values.extend(v if isinstance(v, list) else [v])
    yield str(row['id']), np.array(values, dtype=np.float32)


def postprocess(element: tuple[str, PredictionResult], columns: PredictionColumns) -> dict:
  key, result = element
  scores = np.asarray(result.inference)
  best = int(scores.argmax())
  row = {'id': key, 'predicted_class': columns.outputs.classes[best], 'predicted_probability': float(scores[best])}
  row.update({name: float(s) for name, s in zip(columns.score_names, scores)})
  row.update({'model_name': columns.model_name, 'model_version': columns.model_version, 'run_id': columns.run_id,
              'predicted_at': datetime.datetime.now(datetime.timezone.utc)})
  return row


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True)
  parser.add_argument('--model', required=True)
  parser.add_argument('--output', required=True)
  args, beam_args = parser.parse_known_args(argv)
  bundle = ModelBundle.load(args.model)
  columns = PredictionColumns(bundle.outputs, 'id', (), bundle.name, bundle.version, 'beam-textbook')
  schema = pa.schema([columns.schema.field(i).remove_metadata() for i in range(len(columns.schema))])
  with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
    _ = (p
         | 'Read' >> beam.io.ReadFromParquet(args.input, columns=['id'] + bundle.features.columns)
         | 'Preprocess' >> beam.ParDo(Preprocess(bundle.features))
         | 'RunInference' >> RunInference(KeyedModelHandler(SignatureHandlerNumpy(bundle.saved_model_path)))
         | 'Postprocess' >> beam.Map(postprocess, columns=columns)
         | 'Write' >> beam.io.WriteToParquet(f'{args.output}/predictions', schema, file_name_suffix='.parquet'))
  print(json.dumps({'variant': 'beam-textbook'}))


if __name__ == '__main__':
  main()
