// Runs rows of the `http` bench section alone (not part of `npm run bench`),
// for working on one row without the rest of the section:
//   npx tsx bench/node/http-try.ts [--quick] [--rows=chunked-seq,range-seq,trace,cache-hit,chunk-cache] [--mib=256]
import { parseArgs } from 'node:util';
import { openBenchBrowser } from './browser.ts';
import { HTTP_ROW_GROUPS, httpSection, httpTable, type HttpRowGroup } from './http.ts';

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, rows: { type: 'string' }, mib: { type: 'string', default: '256' } } });
const groups = new Set((values.rows?.split(',') ?? HTTP_ROW_GROUPS).map((s) => s.trim()) as HttpRowGroup[]);
for (const g of groups) if (!HTTP_ROW_GROUPS.includes(g)) throw new Error(`unknown row group "${g}" (known: ${HTTP_ROW_GROUPS.join(', ')})`);
const browser = await openBenchBrowser(process.cwd());
try {
  const runId = new Date().toISOString().replace(/[:.]/g, '-');
  const r = await httpSection(browser.page, values.quick, runId, (l) => process.stderr.write(`${l}\n`), { groups, imageBytes: Number(values.mib) * 2 ** 20 });
  process.stdout.write(`${httpTable(r)}\n`);
} finally {
  await browser.close();
}
