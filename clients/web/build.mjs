// Builds the viewer into avatar_bridge/web/ (index.html, style.css, app.js): the server serves that
// folder, and it is committed so users and CI need no npm. Run: npm ci && npm run build
// (node build.mjs OUT_DIR writes elsewhere: the test that checks the committed build is current).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || join(here, '..', '..', 'avatar_bridge', 'web');

mkdirSync(out, { recursive: true });
for (const name of readdirSync(out)) rmSync(join(out, name), { recursive: true });

await build({
  entryPoints: [join(here, 'src', 'main.js')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  legalComments: 'linked', // three.js and three-vrm are MIT: keep their notices in app.js.LEGAL.txt
  outfile: join(out, 'app.js'),
  logLevel: 'info',
});
for (const name of ['index.html', 'style.css']) copyFileSync(join(here, 'src', name), join(out, name));
console.log(`wrote ${out}`);
