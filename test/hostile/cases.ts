// The hostile-guest case library (issue 9): every case, in one list, for the
// Node run (hostile.test.ts, same-thread host) and the Chromium run
// (e2e/hostile.spec.ts, worker host). Environment-neutral.

import { pciCases } from './cases-pci.ts';
import { registerCases } from './cases-registers.ts';
import { requestCases } from './cases-requests.ts';
import type { HostileCase } from './runner.ts';

export const hostileCases: readonly HostileCase[] = [...requestCases, ...registerCases, ...pciCases];

export function findCase(name: string): HostileCase {
  const c = hostileCases.find((x) => x.name === name);
  if (!c) throw new Error(`no hostile case named "${name}"`);
  return c;
}
