// The harness page's script: start the overlay harness worker and expose it
// to Playwright as `window.harness` (typed by the other harness pages).

import { connect } from './rpc.ts';

window.harness = await connect(new Worker(new URL('./overlay-worker.ts', import.meta.url), { type: 'module' }));
document.body.dataset.ready = 'true';
