#!/usr/bin/env node
// Thin launcher: the TypeScript sources are compiled to dist/ by `npm install` (prepare) or `npm run build`.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'src', 'cli.js');
if (!existsSync(entry)) {
  console.error('scopegate: dist/ is missing; run `npm run build` first');
  process.exit(1);
}
const { runCli } = await import(pathToFileURL(entry).href);
runCli(process.argv.slice(2));
