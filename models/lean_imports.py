"""Third-party modules imported without the parts of them that a run never uses.

A run's start-up is mostly imports, and two of ours drag in a framework the
model may not use at all:

- Beam's `apache_beam.ml.inference.base` (`RunInference`, `ModelHandler`):
  the package `apache_beam.ml` imports `MLTransform` (and with it TensorFlow
  Transform's glue), and the module's optional `ModelManager` imports PyTorch
  and SciPy: about 1.2 s and 400 MB, for a SavedModel or an ONNX model alike.
  Beam imports `ModelManager` again itself where a handler asks for it
  (`use_model_manager`), which ours never do. So the package is registered
  without running its `__init__` (`from apache_beam.ml import MLTransform`
  still works: it is imported when first asked for), PyTorch is refused during
  this one import, and `resource`, which shares the optional import's try
  block, is put back so Beam's model-memory metric still reads.
- `skops.io`: its allow-list walks every scikit-learn package, which imports
  the array-API shim for PyTorch (about 1.1 s); a package that fails to import
  is skipped by that walk, and no PyTorch type is on the list.

PyTorch is refused only while these import, and only where it is not already
loaded; a PyTorch model imports it as usual.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any, Iterator

_ML = 'apache_beam.ml'
_INFERENCE_BASE = 'apache_beam.ml.inference.base'


class _Refuse(importlib.abc.MetaPathFinder):
  """Fails the import of `names` (and their submodules) as if they were not installed."""

  def __init__(self, names: tuple[str, ...]):
    self._names = names

  def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
    if any(fullname == name or fullname.startswith(name + '.') for name in self._names):
      raise ModuleNotFoundError(f'{fullname} is not imported here (models/lean_imports.py)', name=fullname)
    return None


@contextlib.contextmanager
def _refusing(*names: str) -> Iterator[None]:
  """While inside, `names` that are not loaded yet cannot be imported."""
  absent = tuple(name for name in names if name not in sys.modules)
  finder = _Refuse(absent)
  sys.meta_path.insert(0, finder)
  try:
    yield
  finally:
    sys.meta_path.remove(finder)


def _mltransform_on_demand(name: str) -> Any:
  """The package's one export, imported when first asked for (PEP 562)."""
  if name == 'MLTransform':
    from apache_beam.ml.transforms.base import MLTransform
    return MLTransform
  raise AttributeError(f'module {_ML!r} has no attribute {name!r}')


def _register_ml_package() -> None:
  if _ML in sys.modules:
    return
  import apache_beam
  package = importlib.util.module_from_spec(importlib.util.find_spec(_ML))
  package.__getattr__ = _mltransform_on_demand
  sys.modules[_ML] = package
  apache_beam.ml = package


def beam_inference() -> ModuleType:
  """`apache_beam.ml.inference.base`, without MLTransform, ModelManager or PyTorch."""
  if _INFERENCE_BASE in sys.modules:
    return sys.modules[_INFERENCE_BASE]
  _register_ml_package()
  with _refusing('torch'):
    base = importlib.import_module(_INFERENCE_BASE)
  if getattr(base, 'resource', None) is None:
    try:
      import resource
      base.resource = resource
    except ImportError:  # not on this platform: Beam's own fallback stands
      pass
  return base


def skops_io() -> ModuleType:
  """`skops.io`, its allow-list built without importing PyTorch."""
  with _refusing('torch'):
    return importlib.import_module('skops.io')


_base = beam_inference()
KeyedModelHandler = _base.KeyedModelHandler
ModelHandler = _base.ModelHandler
PredictionResult = _base.PredictionResult
RunInference = _base.RunInference
