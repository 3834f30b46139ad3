"""The run report's charts, written as SVG text.

A chart is bars, cells and lines with a few labels, so it is written directly
as an `<svg>` element rather than drawn by a plotting library: there is nothing
to import, no raster to encode, and the browser lays out the text. The page
holds each chart inline, so it stays one file that can be mailed or opened
from a bucket.
"""

from __future__ import annotations

import html
import math
from typing import Optional, Sequence

BLUE, RED, GREEN, GREY = '#4f81bd', '#c0504d', '#9bbb59', '#999'
WIDTH = 700
_CHAR = 6.6  # the width of one character of 11px text, to size the margin for category labels


def _num(value: float) -> str:
  if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
    return f'{value:.2g}'
  return f'{value:,.0f}' if abs(value) >= 100 or float(value).is_integer() else f'{value:.3g}'


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
  """Round values from `lo` to `hi` for an axis, about `count` of them."""
  if not hi > lo:
    hi = lo + 1.0
  raw = (hi - lo) / count
  step = 10 ** math.floor(math.log10(raw))
  step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
  first = math.ceil(lo / step - 1e-9)
  return [round(i * step, 12) for i in range(first, math.floor(hi / step + 1e-9) + 1)]


class Plot:
  """One SVG chart: a plot area inside margins, scales from values to pixels, and its parts as text."""

  def __init__(self, *, width: int = WIDTH, height: int = 300, left: float = 60, right: float = 20,
               top: float = 30, bottom: float = 42):
    self.width, self.height = width, height
    self.left, self.right, self.top, self.bottom = left, width - right, top, height - bottom
    self.parts: list[str] = []
    self.x_range, self.y_range = (0.0, 1.0), (0.0, 1.0)

  def x(self, value: float) -> float:
    lo, hi = self.x_range
    return self.left + (value - lo) / ((hi - lo) or 1.0) * (self.right - self.left)

  def y(self, value: float) -> float:
    lo, hi = self.y_range
    return self.bottom - (value - lo) / ((hi - lo) or 1.0) * (self.bottom - self.top)

  def rect(self, x0: float, y0: float, x1: float, y1: float, color: str, tip: Optional[str] = None,
           opacity: float = 1.0) -> None:
    """A rectangle between two corners, in pixels; `tip` shows on hover."""
    x, y, w, h = min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0)
    title = f'<title>{html.escape(tip)}</title>' if tip else ''
    fade = f' fill-opacity="{opacity:g}"' if opacity < 1 else ''
    self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{color}"{fade}>'
                      f'{title}</rect>')

  def text(self, x: float, y: float, text: str, *, anchor: str = 'middle', size: int = 11, color: str = '#222',
           rotate: bool = False, bold: bool = False) -> None:
    turn = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ''
    weight = ' font-weight="600"' if bold else ''
    self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{color}"'
                      f'{weight}{turn}>{html.escape(text)}</text>')

  def line(self, points: Sequence[tuple[float, float]], color: str, width: float = 1.0) -> None:
    path = ' '.join(f'{x:.1f},{y:.1f}' for x, y in points)
    self.parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="{width:g}"/>')

  def labels(self, title: str, xlabel: str = '', ylabel: str = '') -> None:
    self.text(self.width / 2, 18, title, size=13, bold=True)
    if xlabel:
      self.text((self.left + self.right) / 2, self.height - 6, xlabel)
    if ylabel:
      self.text(14, (self.top + self.bottom) / 2, ylabel, rotate=True)

  def x_axis(self, values: Sequence[float], names: Optional[Sequence[str]] = None) -> None:
    self.line([(self.left, self.bottom), (self.right, self.bottom)], '#444')
    for i, value in enumerate(values):
      self.line([(self.x(value), self.bottom), (self.x(value), self.bottom + 4)], '#444')
      self.text(self.x(value), self.bottom + 16, names[i] if names else _num(value))

  def y_axis(self, values: Sequence[float], names: Optional[Sequence[str]] = None, grid: bool = True) -> None:
    self.line([(self.left, self.top), (self.left, self.bottom)], '#444')
    for i, value in enumerate(values):
      if grid:
        self.line([(self.left, self.y(value)), (self.right, self.y(value))], '#e4e4e4')
      self.text(self.left - 6, self.y(value) + 4, names[i] if names else _num(value), anchor='end')

  def legend(self, series: Sequence[tuple[str, str]]) -> None:
    x = self.right - 8
    for name, color in reversed(series):
      x -= _CHAR * len(name) + 4
      self.text(x, self.top - 10, name, anchor='start')
      x -= 14
      self.rect(x, self.top - 19, x + 10, self.top - 9, color)
      x -= 10

  def svg(self) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" font-family="system-ui,sans-serif">'
            + ''.join(self.parts) + '</svg>')


def hbars(names: Sequence[str], series: Sequence[tuple[str, Sequence[float], object]], *, title: str,
          xlabel: str, value_labels: bool = True, percent: bool = False) -> str:
  """Horizontal bars, one group per name, one bar per series `(name, values, color or a color per bar)`."""
  left = 16 + _CHAR * max([len(n) for n in names] + [4])
  group = 16.0 * len(series) + 10
  top = 48 if len(series) > 1 else 30
  plot = Plot(height=int(top + 30 + group * max(1, len(names))), left=left, right=80, top=top, bottom=36)
  values = [v for _, vs, _ in series for v in vs]
  plot.x_range = (min(0.0, *values) if values else 0.0, max([1.0 if percent else 0.0] + values) or 1.0)
  plot.y_range = (len(names) * group, 0.0)
  for tick in ticks(*plot.x_range):
    plot.line([(plot.x(tick), plot.top), (plot.x(tick), plot.bottom)], '#e4e4e4')
  for i, name in enumerate(names):
    top = plot.y(i * group) + 5
    plot.text(left - 6, top + 8 * len(series) + 4, name, anchor='end')
    for j, (label, vs, colors) in enumerate(series):
      color = colors[i] if isinstance(colors, (list, tuple)) else colors
      y0 = top + 16 * j
      shown = f'{vs[i]:.1f}%' if percent else _num(vs[i])
      plot.rect(plot.x(0), y0, plot.x(vs[i]), y0 + 14, color, f'{name}, {label}: {shown}')
      if value_labels:
        plot.text(plot.x(max(vs[i], 0)) + 4, y0 + 11, shown, anchor='start')
  plot.x_axis(ticks(*plot.x_range), [f'{t:g}%' if percent else _num(t) for t in ticks(*plot.x_range)])
  plot.labels(title, xlabel)
  if len(series) > 1:
    plot.legend([(label, colors) for label, _, colors in series])
  return plot.svg()


def columns(names: Sequence[str], values: Sequence[float], *, title: str, ylabel: str, color: str = BLUE) -> str:
  """One vertical bar per name, each labelled with its value."""
  plot = Plot()
  plot.x_range = (0.0, float(len(names)))
  plot.y_range = (0.0, max(list(values) + [1.0]) * 1.12)
  plot.y_axis(ticks(*plot.y_range))
  for i, (name, value) in enumerate(zip(names, values)):
    plot.rect(plot.x(i + 0.15), plot.y(0), plot.x(i + 0.85), plot.y(value), color, f'{name}: {_num(value)}')
    plot.text(plot.x(i + 0.5), plot.y(value) - 4, _num(value))
    plot.text(plot.x(i + 0.5), plot.bottom + 16, name)
  plot.line([(plot.left, plot.bottom), (plot.right, plot.bottom)], '#444')
  plot.labels(title, '', ylabel)
  return plot.svg()


def histogram(edges: Sequence[float], series: Sequence[tuple[str, Sequence[float], str]], *, title: str,
              xlabel: str, ylabel: str = 'rows') -> str:
  """Counts over bins (`edges` has one more value than each series' counts); a second series is drawn over the
  first, half transparent, so two distributions compare bin by bin."""
  plot = Plot(top=48 if len(series) > 1 else 30)
  plot.x_range = (edges[0], edges[-1]) if len(edges) > 1 and edges[-1] > edges[0] else (0.0, 1.0)
  plot.y_range = (0.0, max([1.0] + [c for _, counts, _ in series for c in counts]) * 1.08)
  plot.y_axis(ticks(*plot.y_range))
  for k, (name, counts, color) in enumerate(series):
    for i, count in enumerate(counts):
      if count:
        plot.rect(plot.x(edges[i]), plot.y(0), plot.x(edges[i + 1]), plot.y(count), color,
                  f'{name}: {_num(count)} from {_num(edges[i])} to {_num(edges[i + 1])}', 0.55 if k else 1.0)
  plot.x_axis(ticks(*plot.x_range))
  plot.labels(title, xlabel, ylabel)
  if len(series) > 1:
    plot.legend([(name, color) for name, _, color in series])
  return plot.svg()


def lines(xs: Sequence[float], series: Sequence[tuple[str, Sequence[float], str]], *, title: str, xlabel: str,
          ylabel: str) -> str:
  """One line per series over the same x values, each point marked."""
  plot = Plot(top=48)
  ys = [y for _, values, _ in series for y in values]
  plot.x_range = (min(xs), max(xs)) if xs else (0.0, 1.0)
  lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
  pad = (hi - lo) * 0.08 or 0.05
  plot.y_range = (lo - pad, hi + pad)
  plot.y_axis(ticks(*plot.y_range))
  for name, values, color in series:
    points = [(plot.x(x), plot.y(y)) for x, y in zip(xs, values)]
    plot.line(points, color, 2)
    for (px, py), y in zip(points, values):
      plot.rect(px - 2.5, py - 2.5, px + 2.5, py + 2.5, color, f'{name}: {_num(y)}')
  plot.x_axis(ticks(*plot.x_range))
  plot.labels(title, xlabel, ylabel)
  plot.legend([(name, color) for name, _, color in series])
  return plot.svg()


def matrix(rows: Sequence[str], cols: Sequence[str], counts: Sequence[Sequence[int]], *, title: str, xlabel: str,
           ylabel: str) -> str:
  """A table of counts as shaded cells, each row shaded by its own total."""
  left = 36 + _CHAR * max([len(r) for r in rows] + [4])
  cell_w, cell_h = min(110.0, (WIDTH - left - 20) / max(1, len(cols))), 34.0
  plot = Plot(width=int(left + cell_w * len(cols) + 20), height=int(80 + cell_h * len(rows)), left=left, top=30,
              bottom=46)
  for i, (row, values) in enumerate(zip(rows, counts)):
    total = max(1, sum(values))
    plot.text(left - 6, plot.top + cell_h * i + cell_h / 2 + 4, row, anchor='end')
    for j, count in enumerate(values):
      share = count / total
      shade = f'rgb({int(247 - 214 * share)},{int(251 - 149 * share)},{int(255 - 74 * share)})'
      x0, y0 = left + cell_w * j, plot.top + cell_h * i
      plot.rect(x0, y0, x0 + cell_w - 2, y0 + cell_h - 2, shade, f'{row} → {cols[j]}: {count:,}')
      plot.text(x0 + cell_w / 2, y0 + cell_h / 2 + 4, f'{count:,}', color='#fff' if share > 0.5 else '#222')
  for j, col in enumerate(cols):
    plot.text(left + cell_w * j + cell_w / 2, plot.top + cell_h * len(rows) + 14, col)
  plot.text(left + cell_w * len(cols) / 2, plot.height - 6, xlabel)
  plot.text(14, plot.top + cell_h * len(rows) / 2, ylabel, rotate=True)
  plot.text(plot.width / 2, 18, title, size=13, bold=True)
  return plot.svg()


def figure(width: float = 7.0, height: float = 3.2):
  """A matplotlib figure and axes, for a chart too rich to write by hand (`--estimate`'s log-log cost chart).
  matplotlib is imported here, when such a chart is drawn, never by the run report."""
  import matplotlib
  matplotlib.use('Agg')  # no display on workers or in CI
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(width, height), dpi=100)
  return fig, ax


def png(fig) -> bytes:
  import io
  from matplotlib import pyplot as plt
  buffer = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buffer, format='png')
  plt.close(fig)
  return buffer.getvalue()


def embed_png(name: str, image: bytes, alt: str) -> str:
  """An <img> holding a PNG chart, so a page stays one file."""
  import base64
  return (f'<img id="chart-{name}" alt="{html.escape(alt)}" '
          f'src="data:image/png;base64,{base64.b64encode(image).decode("ascii")}">')
