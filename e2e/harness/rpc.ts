// A tiny request/response channel between a harness page and its worker, so
// that Playwright can drive code that only runs in a dedicated worker (OPFS
// sync access handles). The page exposes `window.harness.call(op, args)`;
// the test calls it through `page.evaluate`. Errors cross as plain
// {name, message, code?, stack} objects, since Error subclasses do not survive
// structured cloning with their fields (the same records the device worker
// uses, from src/host/browser/worker-protocol.ts).

import { toWireError, type WireError } from '../../src/host/browser/worker-protocol.ts';

export { toWireError, type WireError };

type Request = { id: number; op: string; args: unknown };
type Response = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: WireError };

/** What the worker implements: one async function per operation. */
export type Handlers = Record<string, (args: never) => unknown>;

/** Worker side: answer requests with `handlers`. */
export function serve(handlers: Handlers): void {
  const scope = globalThis as unknown as DedicatedWorkerGlobalScope;
  scope.onmessage = async (event: MessageEvent<Request>) => {
    const { id, op, args } = event.data;
    let reply: Response;
    try {
      const handler = handlers[op];
      if (!handler) throw new Error(`unknown harness op "${op}"`);
      reply = { id, ok: true, value: await handler(args as never) };
    } catch (err) {
      reply = { id, ok: false, error: toWireError(err) };
    }
    scope.postMessage(reply);
  };
  scope.postMessage({ id: 0, ok: true, value: 'ready' } satisfies Response);
}

export interface HarnessClient {
  /** Run `op` in the worker; rejects with an Error carrying the worker error's name, message and code. */
  call<T = unknown>(op: string, args?: unknown): Promise<T>;
  /** Like `call`, but resolves with the worker's error (or null) instead of rejecting. */
  attempt(op: string, args?: unknown): Promise<WireError | null>;
}

/** Page side: wait until the worker is up, then return a client for it. */
export async function connect(worker: Worker): Promise<HarnessClient> {
  const pending = new Map<number, (r: Response) => void>();
  let nextId = 1;
  await new Promise<void>((resolve, reject) => {
    worker.onerror = (e) => reject(new Error(`harness worker failed to start: ${e.message}`));
    worker.onmessage = (e: MessageEvent<Response>) => {
      if (e.data.id === 0) return resolve();
      pending.get(e.data.id)?.(e.data);
      pending.delete(e.data.id);
    };
  });
  const send = (op: string, args: unknown) =>
    new Promise<Response>((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      worker.postMessage({ id, op, args } satisfies Request);
    });
  return {
    async call<T>(op: string, args?: unknown): Promise<T> {
      const r = await send(op, args);
      if (r.ok) return r.value as T;
      throw Object.assign(new Error(`${r.error.name}${r.error.code ? ` [${r.error.code}]` : ''}: ${r.error.message}`), {
        code: r.error.code,
      });
    },
    async attempt(op: string, args?: unknown): Promise<WireError | null> {
      const r = await send(op, args);
      return r.ok ? null : r.error;
    },
  };
}
