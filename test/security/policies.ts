// Concern: policy files for the security suite: the example policy with one more grant to the read scope.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXAMPLE_POLICY } from '../scope.fixture.test.js';

/** A copy of config/policy.yaml whose orders:read scope may also execute `fn` (schema-qualified). */
export function readerMayExecute(fn: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'sg-policy-')), 'policy.yaml');
  const line = '      - { actions: [select], tables: [customers], columns: [id, name, country] }';
  const text = readFileSync(EXAMPLE_POLICY, 'utf8');
  assert.ok(text.includes(line), 'the example policy still has the reader\'s customers rule');
  writeFileSync(file, text.replace(line, `${line}\n      - { actions: [execute], functions: [${fn}] }`));
  return file;
}
