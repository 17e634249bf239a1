// Plain-text tables for the terminal and the README: left-aligned text,
// right-aligned numbers, a dashed rule under the header.

export type Cell = string | number | null;

/** Format a number for a table: thousands separators, `digits` decimals; null → "—". */
export function num(value: number | null | undefined, digits = 0): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function formatTable(header: string[], rows: Cell[][]): string {
  const text = rows.map((r) => r.map((c) => (c === null ? '—' : String(c))));
  const numeric = header.map((_, i) => text.every((r) => /^[-+]?[\d,.]+[×%]?$|^—$/.test(r[i] ?? '')));
  const widths = header.map((h, i) => Math.max(h.length, ...text.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...text.map(line)].join('\n');
}
