// A small rolling line chart on a canvas: a few series, each scaled to its
// own maximum over the visible window (IOPS, MB/s and latency differ by
// orders of magnitude), newest sample on the right.

export interface Series {
  label: string;
  color: string;
  /** Formats the latest value for the legend. */
  format: (value: number) => string;
}

export class RollingChart {
  readonly #canvas: HTMLCanvasElement;
  readonly #series: Series[];
  readonly #capacity: number;
  /** One array of samples per series, oldest first, at most `capacity` long. */
  readonly #samples: number[][];

  constructor(canvas: HTMLCanvasElement, series: Series[], capacity = 120) {
    this.#canvas = canvas;
    this.#series = series;
    this.#capacity = capacity;
    this.#samples = series.map(() => []);
    this.draw();
  }

  push(values: number[]): void {
    values.forEach((v, i) => {
      const s = this.#samples[i]!;
      s.push(v);
      if (s.length > this.#capacity) s.shift();
    });
    this.draw();
  }

  clear(): void {
    for (const s of this.#samples) s.length = 0;
    this.draw();
  }

  draw(): void {
    const canvas = this.#canvas;
    const ratio = globalThis.devicePixelRatio || 1;
    const width = canvas.clientWidth || 600;
    const height = canvas.clientHeight || 200;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const g = canvas.getContext('2d');
    if (!g) return;
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const top = 22;
    const plot = height - top - 4;
    g.strokeStyle = '#8884';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + (plot * i) / 4;
      g.beginPath();
      g.moveTo(0, y);
      g.lineTo(width, y);
      g.stroke();
    }
    g.font = '12px system-ui, sans-serif';
    let legendX = 4;
    this.#series.forEach((series, i) => {
      const samples = this.#samples[i]!;
      const max = Math.max(1e-9, ...samples);
      g.strokeStyle = series.color;
      g.lineWidth = 2;
      g.beginPath();
      samples.forEach((v, j) => {
        const x = width - (samples.length - 1 - j) * (width / (this.#capacity - 1));
        const y = top + plot - (v / max) * plot * 0.95;
        if (j === 0) g.moveTo(x, y);
        else g.lineTo(x, y);
      });
      g.stroke();
      const latest = samples.length ? series.format(samples[samples.length - 1]!) : '–';
      const text = `${series.label} ${latest} (peak ${samples.length ? series.format(max) : '–'})`;
      g.fillStyle = series.color;
      g.fillText(text, legendX, 14);
      legendX += g.measureText(text).width + 16;
    });
  }
}
