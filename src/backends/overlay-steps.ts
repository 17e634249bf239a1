// Sequencing for calls that may finish synchronously (OPFS, memory) or
// return a promise (IndexedDB, HTTP): the overlay stays synchronous, and so
// on the device's fast path, for as long as every call it makes does.

import { isPromise, type MaybePromise } from './backend.ts';

export type Step = () => MaybePromise;

/** Run `steps` in order: synchronously while each finishes synchronously, chained once one goes async. */
export function sequence(steps: readonly Step[], from = 0): MaybePromise {
  for (let i = from; i < steps.length; i++) {
    const r = steps[i]!();
    if (isPromise(r)) return r.then(() => sequence(steps, i + 1));
  }
}

/** Settle when every call in `results` has: nothing when all finished synchronously. */
export function all(results: MaybePromise[]): MaybePromise {
  const pending = results.filter(isPromise);
  if (pending.length === 0) return;
  return Promise.all(pending).then(() => undefined);
}

/**
 * One operation at a time, without a promise when nothing is waiting: the
 * next operation starts at once (synchronously) if the previous one has
 * finished, and after it otherwise. Errors go to the caller of the operation
 * that failed and do not stop the queue.
 */
export class Exclusive {
  /** Settles when the last operation started has; null when none is pending. */
  #tail: Promise<void> | null = null;

  run(op: () => MaybePromise): MaybePromise {
    const result = this.#tail ? this.#tail.then(op) : op();
    if (!isPromise(result)) return result;
    const tail: Promise<void> = result.then(
      () => undefined,
      () => undefined,
    );
    this.#tail = tail;
    void tail.then(() => {
      if (this.#tail === tail) this.#tail = null;
    });
    return result;
  }

  /** Settles once every operation started so far has. */
  idle(): Promise<void> {
    return this.#tail ?? Promise.resolve();
  }
}
