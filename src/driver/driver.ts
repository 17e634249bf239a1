// The driver's long-standing import path: everything in `./index.ts`.
export * from './index.ts';
