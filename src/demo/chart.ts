// A small time chart on a canvas: one quantity (one unit, one y scale) per
// chart, so IOPS, MB/s and latency each get their own chart instead of
// sharing an axis and hiding each other. The x axis is the run's own length
// (0 to its duration in seconds), so a 10 s run fills the chart; the y axis
// starts at 0 and ends at the first round tick above the peak. Both axes carry
// tick labels and a title with the unit. The legend is HTML beside the
// canvas (readable at any width); the canvas's aria-label says what it shows.

export interface Series {
  label: string;
  color: string;
}

export interface ChartOptions {
  /** Title of the y axis, with its unit, e.g. "IOPS" or "latency (ms)". */
  yLabel: string;
  series: Series[];
  /** Formats a y tick. */
  format?: (value: number) => string;
}

/** The smallest "round" number (1, 2 or 5 × 10^n) at least `x`. */
function niceCeil(x: number): number {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

export class TimeChart {
  readonly #canvas: HTMLCanvasElement;
  readonly #options: ChartOptions;
  /** Per sample: its time (s since the run started) and one value per series. */
  #samples: { t: number; values: number[] }[] = [];
  #windowSeconds = 10;

  constructor(canvas: HTMLCanvasElement, options: ChartOptions) {
    this.#canvas = canvas;
    this.#options = options;
    this.draw();
  }

  /** Forget the samples and size the x axis for a run of `windowSeconds`. */
  reset(windowSeconds: number): void {
    this.#samples = [];
    this.#windowSeconds = Math.max(1, windowSeconds);
    this.draw();
  }

  push(t: number, values: number[]): void {
    this.#samples.push({ t, values });
    this.draw();
  }

  /** The y tick step: a round number, about a quarter of the peak. */
  get #yStep(): number {
    let peak = 0;
    for (const s of this.#samples) for (const v of s.values) if (Number.isFinite(v)) peak = Math.max(peak, v);
    return niceCeil((peak > 0 ? peak : 1) / 4);
  }

  /** The top of the y axis: the first tick at or above the peak (plus a little headroom). */
  get yMax(): number {
    let peak = 0;
    for (const s of this.#samples) for (const v of s.values) if (Number.isFinite(v)) peak = Math.max(peak, v);
    const step = this.#yStep;
    return step * Math.max(1, Math.ceil((peak * 1.02) / step));
  }

  draw(): void {
    const canvas = this.#canvas;
    const { yLabel, series } = this.#options;
    const format = this.#options.format ?? ((v: number) => v.toLocaleString());
    const ratio = globalThis.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600;
    const height = canvas.clientHeight || 180;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const yMax = this.yMax;
    const xMax = this.#windowSeconds;
    canvas.dataset.xMax = String(xMax);
    canvas.dataset.yMax = String(yMax);
    canvas.setAttribute(
      'aria-label',
      `${yLabel} against time: x axis time 0 to ${xMax} s, y axis ${yLabel} 0 to ${format(yMax)}; ${this.#samples.length} samples`,
    );
    const g = canvas.getContext('2d');
    if (!g) return;
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const ink = getComputedStyle(canvas).color || '#444';
    g.font = '12px system-ui, sans-serif';
    const yTickWidth = Math.max(g.measureText(format(yMax)).width, g.measureText('0').width);
    const left = 22 + yTickWidth + 6;
    const right = 10;
    const top = 10;
    const bottom = 34;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const x = (t: number) => left + (Math.min(t, xMax) / xMax) * plotW;
    const y = (v: number) => top + plotH - (Math.max(0, v) / yMax) * plotH;

    // Grid and y ticks at whole multiples of a round step, so every label is exact.
    const yStep = this.#yStep;
    g.lineWidth = 1;
    g.fillStyle = ink;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (let i = 0; i * yStep <= yMax * (1 + 1e-9); i++) {
      const v = i * yStep;
      g.strokeStyle = i === 0 ? ink : '#8884';
      g.beginPath();
      g.moveTo(left, y(v));
      g.lineTo(left + plotW, y(v));
      g.stroke();
      g.fillText(format(v), left - 4, y(v));
    }
    // x ticks: about six, at whole seconds.
    const step = niceCeil(xMax / 6);
    g.textAlign = 'center';
    g.textBaseline = 'top';
    for (let t = 0; t <= xMax + 1e-9; t += step) {
      g.strokeStyle = '#8884';
      g.beginPath();
      g.moveTo(x(t), top);
      g.lineTo(x(t), top + plotH);
      g.stroke();
      g.fillText(String(t), x(t), top + plotH + 3);
    }
    g.strokeStyle = ink;
    g.beginPath();
    g.moveTo(left, top);
    g.lineTo(left, top + plotH);
    g.stroke();
    // Axis titles.
    g.fillText('time (s)', left + plotW / 2, top + plotH + 18);
    g.save();
    g.translate(10, top + plotH / 2);
    g.rotate(-Math.PI / 2);
    g.textBaseline = 'middle';
    g.fillText(yLabel, 0, 0);
    g.restore();

    series.forEach((s, i) => {
      g.strokeStyle = s.color;
      g.lineWidth = 2;
      g.beginPath();
      let started = false;
      for (const sample of this.#samples) {
        const v = sample.values[i]!;
        if (!Number.isFinite(v)) continue;
        if (!started) g.moveTo(x(sample.t), y(v));
        else g.lineTo(x(sample.t), y(v));
        started = true;
      }
      g.stroke();
    });
  }
}
