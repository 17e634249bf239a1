// The HTTP harness page's script: start the harness worker (where the device
// would run the backend) and expose it to Playwright as `window.harness`.

import { connect } from './rpc.ts';

const worker = new Worker(new URL('./http-worker.ts', import.meta.url), { type: 'module' });
window.harness = await connect(worker);
document.body.dataset.ready = 'true';
