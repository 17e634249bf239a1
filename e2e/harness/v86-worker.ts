// The v86 harness worker: runs v86-guest.ts's boot in a dedicated worker,
// where OPFS sync access handles exist, for e2e/harness/v86-page.ts.

import { boot, type BootConfig } from './v86-guest.ts';
import { serve } from './rpc.ts';

serve({ boot: (config: BootConfig) => boot(config) });
