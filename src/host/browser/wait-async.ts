// Atomics.waitAsync (ES2024; in every Chromium since 87), typed here because
// the project compiles against ES2022's lib. Returns a promise that settles
// when `array[index]` is notified or no longer holds `value`, or on timeout.

type WaitAsyncResult =
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> };

const waitAsyncImpl = (Atomics as unknown as {
  waitAsync?: (array: Int32Array, index: number, value: number, timeoutMs?: number) => WaitAsyncResult;
}).waitAsync;

/** Whether this platform has Atomics.waitAsync. */
export const hasWaitAsync = typeof waitAsyncImpl === 'function';

export async function waitAsync(array: Int32Array, index: number, value: number, timeoutMs = Infinity): Promise<void> {
  if (!waitAsyncImpl) {
    // Without waitAsync, poll on the event loop (older engines; not Chromium).
    if (Atomics.load(array, index) === value) await new Promise((resolve) => setTimeout(resolve, Math.min(timeoutMs, 4)));
    return;
  }
  const result = waitAsyncImpl(array, index, value, timeoutMs);
  if (result.async) await result.value;
}
