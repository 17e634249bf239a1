// Runs the v86 HTTP rows alone (not part of `npm run bench`): for working on
// them without the memory rows' three boots first.
//   npx tsx bench/node/v86-http-try.ts
import { loadavg } from 'node:os';
import { buildRootImage } from '../../e2e/v86/image.ts';
import { provisionV86 } from '../../e2e/v86/provision.ts';
import { openBenchBrowser } from './browser.ts';
import { v86HttpRows, v86HttpTable } from './v86-http.ts';

const browser = await openBenchBrowser(process.cwd());
try {
  const image = buildRootImage('bench', provisionV86().busybox, 64);
  const r = await v86HttpRows(browser.baseUrl, image, true, (l) => process.stderr.write(`${l}\n`), loadavg);
  process.stdout.write(`${v86HttpTable(r)}\n`);
} finally {
  await browser.close();
}
