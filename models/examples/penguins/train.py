"""Trains the example model, a penguin species classifier, and exports it as a bundle.

    python -m models.examples.penguins.train --output build/bundles/penguins

The data is the Palmer Penguins table (the `palmerpenguins` package ships it):
344 birds, numeric measurements and categorical island and sex, with missing
values. The feature spec is fitted on the training split with the same
readers, validation and transforms the pipeline uses, so serving matches.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Optional

import numpy as np
import pyarrow as pa

from models.bundle import ModelBundle, Outputs, write_bundle
from transforms.rows.data_profile import profile_in_memory
from transforms.rows.dead_letters import Rejected
from transforms.features.spec import Feature, FeatureSpec, fit_in_memory
from transforms.features.preprocessing import FillMissing, OneHot, Vocabulary, ZScore
from transforms.files.readers import read_file
from transforms.rows.validation import validate

LABEL = 'species'
CLASSES = ('Adelie', 'Chinstrap', 'Gentoo')
EXAMPLE_DATA = os.path.join(os.path.dirname(__file__), 'example', 'penguins.csv')

# Measurements are required: a bird without them cannot be classified, so such
# rows go to the dead letters. Body mass and sex are filled when missing.
FEATURES = FeatureSpec((
    Feature('island', 'string', (Vocabulary(), OneHot())),
    Feature('bill_length_mm', 'float', (ZScore(),)),
    Feature('bill_depth_mm', 'float', (ZScore(),)),
    Feature('flipper_length_mm', 'float', (ZScore(),)),
    Feature('body_mass_g', 'float', (FillMissing('mean'), ZScore())),
    Feature('sex', 'string', (FillMissing('constant', 'unknown'), Vocabulary(), OneHot())),
))


def training_data_path() -> str:
  """The CSV that the `palmerpenguins` package ships, or the repository's copy of it."""
  try:
    import palmerpenguins
    path = os.path.join(os.path.dirname(palmerpenguins.__file__), 'data', 'penguins.csv')
    if os.path.exists(path):
      return path
  except ImportError:
    pass
  return EXAMPLE_DATA


def load_rows(path: str) -> pa.RecordBatch:
  """The labelled rows the pipeline would accept, read and validated as the pipeline does."""
  batches = []
  with open(path, 'rb') as f:
    for item in read_file(f, path, 'csv', batch_size=4096, columns=FEATURES.columns + [LABEL]):
      if not isinstance(item, Rejected):
        valid, _ = validate(item, FEATURES)
        batches.append(valid)
  rows = pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
  return rows.filter(rows.column(LABEL).is_valid())


def split(n: int, labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Stratified train/test row indices."""
  rng = np.random.default_rng(seed)
  train, test = [], []
  for label in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == label))
    cut = int(round(len(idx) * test_fraction))
    test.extend(idx[:cut])
    train.extend(idx[cut:])
  return np.sort(np.array(train)), np.sort(np.array(test))


def training_split(data: str, seed: int) -> tuple[pa.RecordBatch, pa.RecordBatch, np.ndarray, np.ndarray]:
  """The labelled rows of `data` split as training splits them: train rows, test rows, their labels."""
  rows = load_rows(data)
  labels = np.array([CLASSES.index(s) for s in rows.column(LABEL).to_pylist()])
  train_idx, test_idx = split(rows.num_rows, labels, test_fraction=0.2, seed=seed)
  return rows.take(pa.array(train_idx)), rows.take(pa.array(test_idx)), labels[train_idx], labels[test_idx]


def fit_features(data: Optional[str] = None, seed: int = 7) -> FeatureSpec:
  """The feature spec `train` fits, without TensorFlow: for serving another model on the same features."""
  return fit_in_memory(FEATURES, [training_split(data or training_data_path(), seed)[0]])


def train(output: str, *, data: Optional[str] = None, version: str = '1', epochs: int = 60,
          seed: int = 7) -> ModelBundle:
  """Fits features and a small Keras MLP, reports held-out accuracy, writes the bundle."""
  import keras
  keras.utils.set_random_seed(seed)
  data = data or training_data_path()
  train_rows, test_rows, train_labels, test_labels = training_split(data, seed)

  spec = fit_in_memory(FEATURES, [train_rows])
  x_train, x_test = spec.transform(train_rows), spec.transform(test_rows)
  model = keras.Sequential([
      keras.Input(shape=(x_train.shape[1],), name='features'),
      keras.layers.Dense(16, activation='relu'),
      keras.layers.Dense(len(CLASSES), activation='softmax'),
  ])
  model.compile(optimizer=keras.optimizers.Adam(0.01), loss='sparse_categorical_crossentropy',
                metrics=['accuracy'])
  model.fit(x_train, train_labels, epochs=epochs, batch_size=32, verbose=0)
  _, train_accuracy = model.evaluate(x_train, train_labels, verbose=0)
  _, test_accuracy = model.evaluate(x_test, test_labels, verbose=0)
  logging.info('penguins: train accuracy %.3f, held-out accuracy %.3f (%d/%d rows)',
               train_accuracy, test_accuracy, len(train_labels), len(test_labels))

  os.makedirs(output, exist_ok=True)
  model.export(os.path.join(output, 'saved_model'), format='tf_saved_model', verbose=False)
  return write_bundle(
      output, features=spec, outputs=Outputs('classification', CLASSES), name='penguin-species', version=version,
      training_metrics={'train_accuracy': round(float(train_accuracy), 4),
                        'test_accuracy': round(float(test_accuracy), 4),
                        'train_rows': len(train_labels), 'test_rows': len(test_labels)},
      training_statistics=profile_in_memory(spec, [train_rows]),
      training_data=os.path.basename(data), seed=seed)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--output', required=True, help='Bundle directory to write.')
  parser.add_argument('--data', default=None, help='Training CSV. Default: the palmerpenguins data.')
  parser.add_argument('--version', default='1', help='Model version stamped on every prediction.')
  parser.add_argument('--epochs', type=int, default=60)
  parser.add_argument('--seed', type=int, default=7)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')
  bundle = train(args.output, data=args.data, version=args.version, epochs=args.epochs, seed=args.seed)
  print(f'wrote bundle {bundle.name} v{bundle.version} to {args.output}: '
        f'held-out accuracy {bundle.metadata["training_metrics"]["test_accuracy"]:.3f}')


if __name__ == '__main__':
  main()
