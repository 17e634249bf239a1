// The hostile-guest suite through the same-thread host: raw rings and raw
// register writes, no driver. Each test is one case of cases.ts; it passes
// when the case's verdict is PASS or REJECT and fails on WEDGED or FAIL,
// printing what the device did.

import { describe, expect, it } from 'vitest';
import { hostileCases } from './cases.ts';
import { requestCases } from './cases-requests.ts';
import { runCase } from './runner.ts';
import { sameThreadTarget } from './target.ts';

describe('hostile guest, same-thread host', () => {
  for (const c of hostileCases) {
    it(c.name, async () => {
      const result = await runCase(sameThreadTarget, c);
      expect(result.kind === 'PASS' || result.kind === 'REJECT', `${result.kind}: ${result.detail}`).toBe(true);
    });
  }
});

// The request cases again on a virtio-pci disk: the raw guest's register
// writes reach the PCI function's common config, notify and ISR (pci-view.ts).
describe('hostile guest over virtio-pci, same-thread host', () => {
  for (const c of requestCases) {
    it(`PCI ${c.name}`, async () => {
      const result = await runCase(sameThreadTarget, { ...c, options: { ...c.options, transport: 'pci' } });
      expect(result.kind === 'PASS' || result.kind === 'REJECT', `${result.kind}: ${result.detail}`).toBe(true);
    });
  }
});
