// The consumer app's own Vite config: nothing virtio-blk-web specific except
// ES module workers (the device worker is a module worker).
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/app/',
  worker: { format: 'es' },
  build: { target: 'es2022', outDir: 'build' },
});
