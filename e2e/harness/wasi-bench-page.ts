// The WASI benchmark page: starts wasi-bench-worker.ts and exposes it as
// `window.bench` for bench/node/wasi.ts.

import type { BenchPage } from '../../bench/harness/page.ts';
import { connect } from './rpc.ts';

const worker = await connect(new Worker(new URL('./wasi-bench-worker.ts', import.meta.url), { type: 'module', name: 'wasi bench program' }));
window.bench = { call: (op, args) => worker.call(op, args) } satisfies BenchPage;
document.body.dataset.ready = 'true';
