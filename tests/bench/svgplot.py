"""Small SVG charts for the benchmarks' reports, with no dependency beyond the standard library.

Every function returns the text of one standalone SVG document (write it to report/*.svg):

  lines(title, xlabel, ylabel, series, logx=False, logy=False)
      one polyline with markers per series; series = [(name, [(x, y), ...]), ...]; points
      whose y is None are gaps.
  dots(title, unit, rows, logx=False)
      one row per scenario and one lane per stack inside it: every sample a dot, the median
      a bar; rows = [(label, {"muster": [values], "lab": [values]}), ...].
  bars(title, unit, groups, logx=False)
      horizontal bars, one per series inside each group; groups = [(label, {series: value})].

Axes are linear or base-10 logarithmic. Colours are fixed per series name in first-seen order
("muster" and "lab" always get the first two), so a series keeps its colour across plots.
"""

import math
import statistics
from xml.sax.saxutils import escape

PALETTE = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477",
           "#66aa00", "#b82e2e", "#316395"]
# The two stacks of the comparison keep their colours in every plot.
_colours = {"muster": PALETTE[0], "lab": PALETTE[1]}


def colour(name):
    """The colour of a series, stable by name within one process."""
    if name not in _colours:
        _colours[name] = PALETTE[len(_colours) % len(PALETTE)]
    return _colours[name]


def _fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10000:
        return f"{v:.0f}" if a < 1e6 else f"{v:.2g}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


class Axis:
    """A mapping from data values to pixels, linear or log10, with its tick values."""

    def __init__(self, lo, hi, p0, p1, log=False):
        self.log = log
        if log:
            positive = [v for v in (lo, hi) if v > 0]
            lo = min(positive) if positive else 1.0
            hi = max(hi, lo)
            lo = 10 ** math.floor(math.log10(lo))
            hi = 10 ** math.ceil(math.log10(hi)) if hi > lo else lo * 10
        else:
            lo = min(lo, 0.0)
            if hi <= lo:
                hi = lo + 1.0
            step = self._step(hi - lo)
            hi = math.ceil(hi / step) * step
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    @staticmethod
    def _step(span):
        raw = span / 5
        mag = 10 ** math.floor(math.log10(raw))
        for m in (1, 2, 2.5, 5, 10):
            if raw <= m * mag:
                return m * mag
        return 10 * mag

    def px(self, v):
        if self.log:
            v = max(v, self.lo)
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + f * (self.p1 - self.p0)

    def ticks(self):
        if self.log:
            out, v = [], self.lo
            while v <= self.hi * 1.0001:
                out.append(v)
                v *= 10
            return out
        step = self._step(self.hi - self.lo)
        n = int(round((self.hi - self.lo) / step))
        return [self.lo + i * step for i in range(n + 1)]


def _doc(width, height, title, body):
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">')
    return "\n".join([head, f'<rect width="{width}" height="{height}" fill="white"/>',
                      f'<text x="10" y="20" font-size="14">{escape(title)}</text>', *body,
                      "</svg>"]) + "\n"


def _legend(names, x, y):
    out = []
    for i, name in enumerate(names):
        yy = y + 16 * i
        out.append(f'<rect x="{x}" y="{yy - 9}" width="10" height="10" fill="{colour(name)}"/>')
        out.append(f'<text x="{x + 14}" y="{yy}">{escape(str(name))}</text>')
    return out


def _xgrid(axis, top, bottom, label):
    out = []
    for t in axis.ticks():
        x = axis.px(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{_fmt(t)}</text>')
    mid = (axis.p0 + axis.p1) / 2
    out.append(f'<text x="{mid:.1f}" y="{bottom + 30}" text-anchor="middle">{escape(label)}</text>')
    return out


def lines(title, xlabel, ylabel, series, logx=False, logy=False):
    """A line chart: x and y axes, one polyline per series, a legend on the right."""
    width, height, left, right, top, bottom = 760, 420, 70, 580, 40, 360
    xs = [x for _, pts in series for x, y in pts if y is not None]
    ys = [y for _, pts in series for x, y in pts if y is not None]
    if not xs:
        return _doc(width, 80, title, ['<text x="10" y="50">no data</text>'])
    xa = Axis(min(xs), max(xs), left, right, logx)
    ya = Axis(min(ys), max(ys), bottom, top, logy)
    body = _xgrid(xa, top, bottom, xlabel)
    for t in ya.ticks():
        y = ya.px(t)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    body.append(f'<text x="14" y="{(top + bottom) / 2:.0f}" text-anchor="middle" '
                f'transform="rotate(-90 14 {(top + bottom) / 2:.0f})">{escape(ylabel)}</text>')
    body.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
                'fill="none" stroke="#999"/>')
    for name, pts in series:
        c = colour(name)
        run = []
        for x, y in list(pts) + [(None, None)]:
            if y is None:
                if len(run) > 1:
                    body.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" '
                                f'points="{" ".join(run)}"/>')
                run = []
                continue
            px, py = xa.px(x), ya.px(y)
            run.append(f"{px:.1f},{py:.1f}")
            body.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{c}"/>')
    body += _legend([name for name, _ in series], right + 20, top + 10)
    return _doc(width, height, title, body)


def _rows_frame(title, unit, labels, lanes, values, logx):
    """Shared frame of dots() and bars(): the value axis and the row labels."""
    # The plot starts right of the longest row label (about 6.6 px a character at 12 px).
    lane_h, top = 16, 40
    left = max(230, 20 + round(6.6 * max((len(str(x)) for x in labels), default=0)))
    right = left + 470
    row_h = lane_h * max(lanes, 1) + 10
    bottom = top + row_h * len(labels)
    nonzero = [v for v in values if v is not None]
    axis = Axis(min(nonzero, default=0), max(nonzero, default=1), left, right, logx)
    body = _xgrid(axis, top, bottom, unit)
    for i, label in enumerate(labels):
        y = top + row_h * i
        if i:
            body.append(f'<line x1="10" y1="{y}" x2="{right}" y2="{y}" stroke="#ccc"/>')
        body.append(f'<text x="10" y="{y + row_h / 2 + 4:.0f}">{escape(str(label))}</text>')
    return axis, body, (left, right, top, row_h, lane_h, bottom)


def dots(title, unit, rows, logx=False):
    """A strip chart: per row (scenario) one lane per stack; each sample a dot, the median a bar."""
    names = []
    for _, by in rows:
        names += [n for n in by if n not in names]
    values = [v for _, by in rows for vs in by.values() for v in vs]
    axis, body, (left, right, top, row_h, lane_h, bottom) = _rows_frame(
        title, unit, [label for label, _ in rows], len(names), values, logx)
    for i, (_, by) in enumerate(rows):
        for j, name in enumerate(names):
            vs = [v for v in by.get(name, []) if v is not None]
            if not vs:
                continue
            y = top + row_h * i + 5 + lane_h * j + lane_h / 2
            c = colour(name)
            for v in vs:
                body.append(f'<circle cx="{axis.px(v):.1f}" cy="{y:.1f}" r="4" fill="{c}" '
                            'fill-opacity="0.55"/>')
            x = axis.px(statistics.median(vs))
            body.append(f'<line x1="{x:.1f}" y1="{y - 7:.1f}" x2="{x:.1f}" y2="{y + 7:.1f}" '
                        f'stroke="{c}" stroke-width="3"/>')
    body += _legend(names, right + 20, top + 10)
    return _doc(right + 120, bottom + 50, title, body)


def bars(title, unit, groups, logx=False):
    """Horizontal bars: per group one bar per series, its value written at its end."""
    names = []
    for _, by in groups:
        names += [n for n in by if n not in names]
    values = [v for _, by in groups for v in by.values()]
    axis, body, (left, right, top, row_h, lane_h, bottom) = _rows_frame(
        title, unit, [label for label, _ in groups], len(names), values, logx)
    for i, (_, by) in enumerate(groups):
        for j, name in enumerate(names):
            v = by.get(name)
            if v is None:
                continue
            y = top + row_h * i + 5 + lane_h * j
            x0, x1 = axis.px(axis.lo if logx else 0), axis.px(v)
            body.append(f'<rect x="{x0:.1f}" y="{y + 2:.1f}" width="{max(x1 - x0, 1):.1f}" '
                        f'height="{lane_h - 4}" fill="{colour(name)}"/>')
            body.append(f'<text x="{x1 + 4:.1f}" y="{y + lane_h - 4:.1f}">{_fmt(v)}</text>')
    body += _legend(names, right + 20, top + 10)
    return _doc(right + 120, bottom + 50, title, body)
