"""The `beam-textbook` image variant: Beam's own image-classification recipe, element by element.

    python -m benchmarks.images_textbook --input 'DIR/*.jpg' --model BUNDLE --output DIR [--decoder pillow]

As Beam's docs and its `pytorch_image_classification` example build it:
`fileio.MatchFiles` → `ReadMatches` → a per-element `Map` that decodes and
preprocesses one image into a tensor (benchmarks/images_recipe.py) →
`RunInference(KeyedModelHandler(PytorchModelHandlerTensor(...)))`, which loads
the state dict into the model class (testing/resnet.py `ResNet`) and batches
single tensors with Beam's default `BatchElements` → a per-element `Map` to a
dict → `WriteToParquet`. Runs on the DirectRunner unless Beam flags say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor
from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks import images_recipe as recipe
from testing.resnet import STATE_DICT, ResNet


def to_tensor(readable: fileio.ReadableFile, spec: dict, decoder: str):
  import torch
  return readable.metadata.path, torch.from_numpy(recipe.preprocess(recipe.decode(readable.read(), decoder), spec))


def postprocess(element: tuple[str, PredictionResult], classes: list[str]) -> dict:
  path, result = element
  best = int(result.inference.argmax())
  return {'path': path, 'predicted_class': classes[best], 'predicted_probability': float(result.inference[best])}


def main(argv=None) -> None:
  import pyarrow as pa
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', required=True, help='A glob of JPEG files.')
  parser.add_argument('--model', required=True, help='An image bundle with state_dict.pt and images.json.')
  parser.add_argument('--output', required=True)
  parser.add_argument('--decoder', default='simplejpeg', choices=recipe.DECODERS)
  args, beam_args = parser.parse_known_args(argv)
  with open(os.path.join(args.model, 'metadata.json'), encoding='utf-8') as f:
    params = json.load(f)['model_params']
  spec, classes = recipe.load_spec(args.model), recipe.load_classes(args.model)
  handler = PytorchModelHandlerTensor(state_dict_path=os.path.join(args.model, STATE_DICT), model_class=ResNet,
                                      model_params=params, device='CPU')
  schema = pa.schema([('path', pa.string()), ('predicted_class', pa.string()), ('predicted_probability', pa.float32())])
  with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
    _ = (p
         | 'Match' >> fileio.MatchFiles(args.input)
         | 'Read' >> fileio.ReadMatches()
         | 'Preprocess' >> beam.Map(to_tensor, spec=spec, decoder=args.decoder)
         | 'RunInference' >> RunInference(KeyedModelHandler(handler))
         | 'Postprocess' >> beam.Map(postprocess, classes=classes)
         | 'Write' >> beam.io.WriteToParquet(os.path.join(args.output, 'predictions'), schema,
                                             file_name_suffix='.parquet'))
  print(json.dumps({'variant': 'beam-textbook'}))


if __name__ == '__main__':
  main()
