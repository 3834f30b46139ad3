"""The proof of an image bundle, and why it fails: the setting of images.json that differs from the training code.

An image model that disagrees with its user's outputs on every image was
almost always fed its pixels another way than it was trained on: channels
first where it takes them last (layout NCHW/NHWC), values 0-1 where it took
0-255 (or mean/std given in 0-255 units), no ImageNet mean/std where it had
them (or the reverse), BGR where it took RGB (OpenCV reads BGR), another resize
policy, grey where it took colour. `diagnose` tries each on the expected
images, keeps the change that makes most of them agree, tries the rest on top
of it, and names what it kept, with the images.json that agrees.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, Optional

import numpy as np
import pyarrow as pa

from models.bundle import BundleError, ModelBundle, Outputs, SAVED_MODEL
from models.importer.images import ExpectedImages, Predict, decode_all, predict_images
from models.importer.parity import Agreement, Tolerance, compare
from transforms.images.errors import ImageError
from transforms.images.spec import ImageSpec, Resize, json_shape

# Images each candidate is tried on: enough to tell the settings apart, few enough to try a dozen.
DIAGNOSIS_IMAGES = 64
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_OTHER_LAYOUT = {'NCHW': 'NHWC', 'NHWC': 'NCHW'}
_LAYOUT_WORDS = {'NCHW': '[N, C, H, W]: channels first, as PyTorch', 'NHWC': '[N, H, W, C]: channels last, as '
                 'TensorFlow'}
GENERAL = ('check images.json against your own preprocessing: layout (NCHW or NHWC), mean/std and the pixel scale '
           '(0-1 or 0-255), channel order (RGB or BGR), the resize policy and size, color (RGB or L); and that the '
           'expected outputs come from this model and these files')


def predictor_of(bundle: ModelBundle) -> Predict:
  """The bundle's model, loaded as the job loads it, as a function of a batch of tensors."""
  from models.handlers import load_predictor  # frameworks are heavy imports; only here
  path = bundle.saved_model_path if bundle.format == SAVED_MODEL else bundle.model_path
  return load_predictor(bundle.format, path, bundle.outputs, options=bundle.load_options, inputs=bundle.inputs).predict


def prove(bundle: ModelBundle, expected: ExpectedImages, tolerance: Tolerance, *, min_accuracy: Optional[float],
          write: Callable[[ModelBundle, pa.RecordBatch, np.ndarray], None]) -> Agreement:
  """Runs the bundle's model on the expected images as a run would, and lays its outputs out with `write` (as a
  run writes them); raises `BundleError` with the mismatches and likely causes when they disagree."""
  predict = predictor_of(bundle)
  try:
    scores = predict_images(predict, expected.images, bundle.images)
  except Exception as e:  # pylint: disable=broad-except  # each framework raises its own for a wrong shape
    causes = diagnose(bundle.images, predict, expected, bundle.outputs, tolerance, None, min_accuracy=min_accuracy)
    raise BundleError('\n'.join([f'the model fails on the tensor images.json makes: {str(e).splitlines()[0][:300]}',
                                 'likely cause:', *[f'  {c}' for c in causes]])) from None
  write(bundle, expected.rows.valid, scores)
  agreement = compare(scores, expected.rows, bundle.outputs, tolerance, min_accuracy)
  if agreement.passed:
    return agreement
  causes = diagnose(bundle.images, predict, expected, bundle.outputs, tolerance, agreement,
                    min_accuracy=min_accuracy, scores=scores)
  raise BundleError('\n'.join([
      f'--expected {expected.rows.path}: the bundle does not reproduce your model\'s outputs: {agreement.summary}.',
      'first mismatches:', *[f'  {m}' for m in agreement.mismatches], 'likely cause:', *[f'  {c}' for c in causes]]))


def check_signature(bundle: ModelBundle) -> None:
  """`ModelBundle.check_signature`; when the model refuses zeros of the tensor images.json makes, whether it takes
  the other layout or colour."""
  try:
    bundle.check_signature()
  except BundleError as e:
    hint = shape_hint(predictor_of(bundle), bundle.images)
    if hint is None:
      raise
    raise BundleError(f'{e}\nlikely cause:\n  {hint}') from None


@dataclasses.dataclass(frozen=True)
class _Way:
  """One way to feed the model: the images.json it would be fed by."""
  spec: ImageSpec


@dataclasses.dataclass(frozen=True)
class _Change:
  kind: str
  way: _Way
  cause: str


def _fix(spec: ImageSpec, **fields) -> str:
  return ', '.join(f'"{k}": {json.dumps(v)}' for k, v in fields.items()) + ' in images.json'


def _changes(way: _Way) -> list[_Change]:
  """Every other way to feed the model that a training script commonly differs by, most likely first."""
  spec, out = way.spec, []

  def add(kind: str, cause: str, **fields) -> None:
    out.append(_Change(kind, _Way(dataclasses.replace(spec, **fields)), cause))

  other = _OTHER_LAYOUT[spec.layout]
  add('layout', f'layout: the model takes {other} ({_LAYOUT_WORDS[other]}), images.json makes {spec.layout}: set '
      f'"layout": "{other}"', layout=other)
  if spec.dtype != 'uint8':
    times = tuple(s / 255.0 for s in spec.std) or (1 / 255.0,)
    add('scale', 'pixel scale 0-255 vs 0-1: the model takes pixel values 0-255, but the job scales them to 0-1 '
        'before mean/std: ' + _fix(spec, std=[round(s, 9) for s in times]), std=times)
    if spec.std:
      add('scale', 'pixel scale 0-1 vs 0-255: the model takes pixel values 0-1, but images.json\'s std scales them '
          'up: ' + _fix(spec, std=[s * 255.0 for s in spec.std]), std=tuple(s * 255.0 for s in spec.std))
    if any(v > 1 for v in spec.mean + spec.std):
      mean, std = tuple(m / 255.0 for m in spec.mean), tuple(s / 255.0 for s in spec.std)
      add('scale', 'mean/std in 0-255 units: the job scales pixels to 0-1 before subtracting mean and dividing by '
          'std, so give them in 0-1 units: ' + _fix(spec, mean=[round(m, 6) for m in mean],
                                                    std=[round(s, 6) for s in std]), mean=mean, std=std)
    if not spec.mean and not spec.std:
      if spec.color == 'RGB':
        add('normalise', 'mean/std: the model was trained on images normalised by ImageNet\'s mean and std, which '
            'images.json leaves out: ' + _fix(spec, mean=IMAGENET_MEAN, std=IMAGENET_STD),
            mean=IMAGENET_MEAN, std=IMAGENET_STD)
      add('normalise', 'mean/std: the model takes values in [-1, 1] (x * 2 - 1), which images.json leaves out: '
          + _fix(spec, mean=[0.5], std=[0.5]), mean=(0.5,), std=(0.5,))
    else:
      add('normalise', 'mean/std: the model takes the 0-1 values as they are; images.json subtracts a mean or '
          'divides by a std it was not trained with: remove "mean" and "std" from images.json', mean=(), std=())
  if spec.color in ('RGB', 'BGR'):
    flipped = 'BGR' if spec.color == 'RGB' else 'RGB'
    # The same images, channels reversed: each channel keeps its own mean and std, now listed in the new order.
    reversed_ = {'color': flipped, **({'mean': list(spec.mean[::-1])} if spec.mean else {}),
                 **({'std': list(spec.std[::-1])} if spec.std else {})}
    add('channels', f'RGB vs BGR: the model agrees when its channels are reversed, so it was trained on {flipped} '
        'images (OpenCV\'s cv2.imread reads BGR, Pillow RGB): ' + _fix(spec, **reversed_),
        color=flipped, mean=spec.mean[::-1], std=spec.std[::-1])
    if len(set(spec.mean)) > 1 or len(set(spec.std)) > 1:
      add('mean order', 'mean/std order: images.json lists them in BGR order; the model agrees with them in RGB '
          'order: ' + _fix(spec, mean=list(spec.mean[::-1]), std=list(spec.std[::-1])),
          mean=spec.mean[::-1], std=spec.std[::-1])
  if spec.resize.policy != 'none':
    size = spec.resize.size
    for resize in (Resize('stretch', size), Resize('crop', size), Resize('pad', size),
                   Resize('crop', size, shorter_side=round(max(size) * 256 / 224))):
      if resize != spec.resize:
        policy = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(resize).items()
                  if v is not None and k != 'pad_value'}
        add('resize', f'resize policy: the model agrees with images resized by "{resize.policy}"'
            + (f' (shorter side {resize.shorter_side})' if resize.shorter_side else '')
            + f', images.json says "{spec.resize.policy}": ' + _fix(spec, resize=policy), resize=resize)
  other_color = 'L' if spec.color == 'RGB' else 'RGB'
  one = lambda values: values if len(values) <= 1 else ()  # noqa: E731  # per-channel values fit one colour only
  add('color', f'color: the model takes {other_color} images ({3 if other_color == "RGB" else 1} channels), '
      f'images.json makes {spec.color}: set "color": "{other_color}"', color=other_color, mean=one(spec.mean),
      std=one(spec.std))
  return out


def diagnose(spec: ImageSpec, predict: Predict, expected: ExpectedImages, outputs: Outputs, tolerance: Tolerance,
             agreement: Optional[Agreement], *, min_accuracy: Optional[float] = None,
             scores: Optional[np.ndarray] = None) -> list[str]:
  """The likely causes of a disagreement (`agreement` None: the model failed on the tensor), each with the change
  to images.json that makes the model agree, or the general checklist when no change helps."""
  sample = expected.head(DIAGNOSIS_IMAGES)
  if agreement is not None and expected.rows.valid.num_rows > DIAGNOSIS_IMAGES:
    agreement = compare(scores[:DIAGNOSIS_IMAGES], sample.rows, outputs, tolerance, min_accuracy)
  decoded: dict[tuple, Optional[list[np.ndarray]]] = {(spec.resize, spec.color): list(sample.images)}

  def score(way: _Way) -> Optional[Agreement]:
    key = (way.spec.resize, way.spec.color)
    if key not in decoded:
      images = decode_all(sample.sources, way.spec)
      decoded[key] = None if any(isinstance(i, ImageError) for i in images) else images
    if decoded[key] is None:
      return None
    try:
      found = predict_images(predict, decoded[key], way.spec)
    except Exception:  # pylint: disable=broad-except  # a shape the model refuses is not the cause
      return None
    if found.shape != (sample.rows.valid.num_rows, outputs.width):
      return None
    return compare(found, sample.rows, outputs, tolerance, min_accuracy)

  way, best, kept = _Way(spec), agreement, []
  for _ in range(3):
    trials = [(score(c.way), c) for c in _changes(way) if c.kind not in {k.kind for k in kept}]
    trials = [(a, c) for a, c in trials if a is not None]
    if not trials:
      break
    found, change = max(trials, key=lambda t: t[0].agreeing)
    if best is not None and found.agreeing <= best.agreeing:
      break
    kept.append(change)
    way, best = change.way, found
    if found.passed:
      break
  causes = [c.cause for c in kept]
  if kept and not best.passed:
    causes.append(f'with that, {best.agreeing} of {best.rows} images agree: something else differs too; {GENERAL}')
  if kept:
    return causes
  if agreement is None:
    return [f'no other layout, colour or size of images.json ({json_shape(spec.tensor_shape())} now) runs the '
            f'model; {GENERAL}']
  gap = _largest_gap(scores[:DIAGNOSIS_IMAGES], sample)
  if gap is not None and gap < 0.05:
    causes.append(f'the outputs are close (at most {gap:.3g} apart) but not within the tolerance: your code decodes '
                  'or resizes the images a little differently from the job (JPEG by libjpeg-turbo, resizing by '
                  'Pillow\'s antialiased bilinear filter); compare on images already at the model\'s size, or, if '
                  f'that difference is acceptable, pass --expected_atol {gap * 1.1:.2g}')
  return causes + [GENERAL]


def _largest_gap(scores: np.ndarray, sample: ExpectedImages) -> Optional[float]:
  """The largest |bundle - expected| over the given probabilities or scores; None when none were given."""
  rows = sample.rows
  gaps = [np.nanmax(np.abs(scores[:, i] - want)) for i, want in rows.probabilities.items() if not np.isnan(want).all()]
  if rows.scores is not None and not np.isnan(rows.scores).all():
    gaps.append(np.nanmax(np.abs(scores[:, 0] - rows.scores)))
  return float(max(gaps)) if gaps else None


def shape_hint(predict: Predict, spec: ImageSpec) -> Optional[str]:
  """Which other layout or colour the model runs on, when it refuses zeros of the tensor images.json makes; None
  when no other one runs, or the size is left to each image (resize "none")."""
  if spec.resize.policy == 'none':
    return None
  for change in _changes(_Way(spec)):
    if change.kind not in ('layout', 'color'):
      continue
    shape = (2, *change.way.spec.tensor_shape()[1:])
    try:
      predict({spec.tensor: np.zeros(shape, change.way.spec.dtype)})
    except Exception:  # pylint: disable=broad-except  # refused this shape too
      continue
    return change.cause
  return None
