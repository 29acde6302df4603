// Builds the softphone into web/dist: app.js (bundled, minified), app.css and index.html.
import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const dist = join(here, 'dist');

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  entryPoints: { app: join(src, 'main.js'), },
  outdir: dist,
  bundle: true,
  minify: true,
  sourcemap: 'linked',
  format: 'iife',
  platform: 'browser',
  target: ['chrome110', 'firefox115', 'safari16'],
  legalComments: 'linked',
  logLevel: 'warning',
});
await build({
  entryPoints: [join(src, 'app.css')],
  outdir: dist,
  bundle: true,
  minify: true,
  logLevel: 'warning',
});
await copyFile(join(src, 'index.html'), join(dist, 'index.html'));
console.log(`built ${dist}`);
