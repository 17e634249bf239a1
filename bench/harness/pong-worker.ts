// The other half of the bare Atomics round trip (vcpu-worker.ts pings): wait
// for word 0 to change, echo it into word 1 and notify, until it reads -1.
// Same shape as doorbell → device → interrupt, with no work in between.

import { serve } from '../../e2e/harness/rpc.ts';

serve({
  pong: ({ words }: { words: Int32Array }) => {
    let seen = Atomics.load(words, 0);
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
