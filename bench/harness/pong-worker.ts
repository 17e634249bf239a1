// The other half of the bare Atomics round trip (vcpu-worker.ts pings): wait
// for word 0 to change, echo it into word 1 and notify, until it reads -1.
// Same shape as doorbell → device → interrupt, with no work in between.

import { serve } from '../../e2e/harness/rpc.ts';

serve({
  pong: ({ words }: { words: Int32Array }) => {
    // The words are fresh (zero): start from 0, not from what word 0 holds
    // now — the ping may already have stored its first value.
    let seen = 0;
    let echoes = 0;
    for (;;) {
      Atomics.wait(words, 0, seen, 10_000);
      const v = Atomics.load(words, 0);
      if (v === seen) continue;
      if (v === -1) return echoes;
      seen = v;
      Atomics.store(words, 1, v);
      Atomics.notify(words, 1);
      echoes++;
    }
  },
});
