// Starts a TypeScript worker thread under Node 20 (whose workers ignore
// `--import tsx` in execArgv): register tsx's loader in this thread, then
// import the module named by workerData.module.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.module);
