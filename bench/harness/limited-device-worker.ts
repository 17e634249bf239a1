// The worker host's device worker with a rate limiter, for the limiter
// accuracy rows. The worker host cannot carry a limiter yet: `DeviceSpec`
// (src/host/protocol.ts) has no limiter field, and a RateLimiter object does
// not survive structured cloning. So this module runs the stock device worker
// unchanged and, in front of its message handler, turns a `limiterConfig`
// riding on the start message's device options into a RateLimiter, which the
// device worker then passes to VirtioBlkDevice with the rest of the options.
// Once DeviceSpec grows a limiter config, this file goes away.

import '../../src/host/device-worker.ts';
import { RateLimiter, type RateLimiterConfig } from '../../src/limiter/index.ts';

const scope = globalThis as unknown as DedicatedWorkerGlobalScope;
const stock = scope.onmessage;
if (!stock) throw new Error('the device worker installed no message handler');

scope.onmessage = (event: MessageEvent) => {
  const data = event.data as { type?: string; device?: { limiterConfig?: RateLimiterConfig; limiter?: unknown } };
  if (data.type === 'start' && data.device?.limiterConfig) {
    data.device.limiter = new RateLimiter(data.device.limiterConfig);
    delete data.device.limiterConfig;
  }
  return stock.call(scope, event);
};
