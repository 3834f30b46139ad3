"""Trains the example recommender, top car makes for a shopper, and exports it as a ranking bundle.

    python -m models.examples.recommender.train --output build/bundles/car-makes
    python -m models.examples.recommender.train --shoppers 100000 --shoppers_output build/shoppers.parquet

The data is derived, and this says how. No package installed here ships
user-item interactions without downloading them at run time, so the
interactions come from a real table that one ships: the 406 cars of
`vega_datasets`' `cars` (1970-1982; miles per gallon, cylinders,
displacement, horsepower, weight, acceleration, model year, origin, and the
car's name). Each car is read as one purchase: a shopper whose needs are the
car's figures bought the car's make (the first word of its name, spelling
variants merged: "chevy" and "chevroelt" are chevrolet, "vw" volkswagen).
The catalogue is the 30 makes; the model scores every make for a shopper's
needs, and the job keeps the top K. Shoppers to recommend for are the real
cars' figures resampled with 3% noise, each with a `user_id`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.bundle import ModelBundle, Outputs, write_bundle
from transforms.rows.data_profile import profile_in_memory
from transforms.features.spec import Feature, FeatureSpec, fit_in_memory
from transforms.features.preprocessing import FillMissing, OneHot, Vocabulary, ZScore

# The first word of a car's name, as written in the data, to the make it means.
SPELLINGS = {'chevy': 'chevrolet', 'chevroelt': 'chevrolet', 'vw': 'volkswagen', 'vokswagen': 'volkswagen',
             'toyouta': 'toyota', 'maxda': 'mazda', 'mercedes-benz': 'mercedes', 'capri': 'mercury',
             'hi': 'international-harvester'}
NUMERIC = ('Miles_per_Gallon', 'Cylinders', 'Displacement', 'Horsepower', 'Weight_in_lbs', 'Acceleration', 'Year')
# Miles per gallon and horsepower are missing for a few cars: filled with the training mean.
FEATURES = FeatureSpec((
    Feature('Miles_per_Gallon', 'float', (FillMissing('mean'), ZScore())),
    Feature('Cylinders', 'float', (ZScore(),)),
    Feature('Displacement', 'float', (ZScore(),)),
    Feature('Horsepower', 'float', (FillMissing('mean'), ZScore())),
    Feature('Weight_in_lbs', 'float', (ZScore(),)),
    Feature('Acceleration', 'float', (ZScore(),)),
    Feature('Year', 'float', (ZScore(),)),
    Feature('Origin', 'string', (Vocabulary(), OneHot())),
))


def cars_path() -> str:
  import vega_datasets
  return os.path.join(os.path.dirname(vega_datasets.__file__), '_data', 'cars.json')


def make_of(name: str) -> str:
  first = name.split()[0].lower()
  return SPELLINGS.get(first, first)


def purchases(path: Optional[str] = None) -> tuple[pa.RecordBatch, list[str]]:
  """Every car as one purchase: the shopper's needs (the feature columns) and the make bought (`make`)."""
  with open(path or cars_path(), encoding='utf-8') as f:
    cars = json.load(f)
  columns = {name: pa.array([c[name] for c in cars], pa.float64()) for name in NUMERIC if name != 'Year'}
  columns['Year'] = pa.array([float(c['Year'][:4]) for c in cars], pa.float64())
  columns['Origin'] = pa.array([c['Origin'] for c in cars], pa.string())
  columns['make'] = pa.array([make_of(c['Name']) for c in cars], pa.string())
  rows = pa.RecordBatch.from_pydict(columns)
  return rows, sorted(set(columns['make'].to_pylist()))


def shoppers(n: int, *, seed: int = 0) -> pa.Table:
  """`n` shoppers to recommend for: real cars' needs resampled with 3% noise, keyed by user_id."""
  rows, _ = purchases()
  rng = np.random.default_rng(seed)
  sample = rows.take(pa.array(rng.integers(0, rows.num_rows, n)))
  columns = {'user_id': pa.array([f'user-{i:08d}' for i in range(n)], pa.string())}
  for name in NUMERIC:
    values = sample.column(name).to_numpy(zero_copy_only=False)
    noisy = np.round(values * (1 + rng.normal(0, 0.03, n)), 1) if name != 'Year' else values
    columns[name] = pa.array(noisy, pa.float64(), from_pandas=True)
  columns['Origin'] = sample.column('Origin')
  return pa.table(columns)


def train(output: str, *, version: str = '1', epochs: int = 150, seed: int = 7) -> ModelBundle:
  """Fits the features and a small Keras MLP with a softmax over the makes; reports held-out hit rates."""
  import keras
  keras.utils.set_random_seed(seed)
  rows, makes = purchases()
  labels = np.array([makes.index(m) for m in rows.column('make').to_pylist()])
  test = np.random.default_rng(seed).random(rows.num_rows) < 0.2
  train_rows, test_rows = rows.filter(pa.array(~test)), rows.filter(pa.array(test))
  spec = fit_in_memory(FEATURES, [train_rows])
  x_train, x_test = spec.transform(train_rows), spec.transform(test_rows)
  model = keras.Sequential([
      keras.Input(shape=(x_train.shape[1],), name='features'),
      keras.layers.Dense(64, activation='relu'),
      keras.layers.Dense(len(makes), activation='softmax'),
  ])
  model.compile(optimizer=keras.optimizers.Adam(0.01), loss='sparse_categorical_crossentropy')
  model.fit(x_train, labels[~test], epochs=epochs, batch_size=32, verbose=0)
  scores = model.predict(x_test, verbose=0)
  ranked = np.argsort(-scores, axis=1)
  metrics = {f'test_hit_rate_at_{k}': round(float(np.mean([labels[test][i] in ranked[i, :k]
                                                           for i in range(len(ranked))])), 4) for k in (1, 5, 10)}
  popular = np.argsort(-np.bincount(labels[~test], minlength=len(makes)))
  metrics['most_popular_hit_rate_at_5'] = round(float(np.isin(labels[test], popular[:5]).mean()), 4)
  metrics.update(train_rows=int((~test).sum()), test_rows=int(test.sum()))
  logging.info('car makes: %s', metrics)
  os.makedirs(output, exist_ok=True)
  model.export(os.path.join(output, 'saved_model'), format='tf_saved_model', verbose=False)
  return write_bundle(output, features=spec, outputs=Outputs('ranking', items=tuple(makes)), name='car-makes',
                      version=version, training_metrics=metrics,
                      training_statistics=profile_in_memory(spec, [train_rows]),
                      training_data='vega_datasets cars.json (each car read as one purchase of its make)', seed=seed)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--output', default=None, help='Bundle directory to write.')
  parser.add_argument('--version', default='1', help='Model version stamped on every prediction.')
  parser.add_argument('--epochs', type=int, default=150)
  parser.add_argument('--shoppers', type=int, default=0, help='Also write this many shoppers to recommend for.')
  parser.add_argument('--shoppers_output', default='build/shoppers.parquet', help='Where --shoppers go (Parquet).')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')
  if args.output:
    bundle = train(args.output, version=args.version, epochs=args.epochs)
    print(f'wrote bundle {bundle.name} v{bundle.version} to {args.output}: {len(bundle.outputs.items)} makes, '
          f'held-out hit rate at 5 {bundle.metadata["training_metrics"]["test_hit_rate_at_5"]:.3f}')
  if args.shoppers:
    os.makedirs(os.path.dirname(args.shoppers_output) or '.', exist_ok=True)
    pq.write_table(shoppers(args.shoppers), args.shoppers_output)
    print(f'wrote {args.shoppers:,} shoppers to {args.shoppers_output}')


if __name__ == '__main__':
  main()
