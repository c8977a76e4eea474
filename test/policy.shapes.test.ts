import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initParser, PolicyStore } from '../src/policy/index.js';
import { numericShape, ShapeCache } from '../src/policy/shapes.js';

// Decisions shared between texts that differ only in numeric literals must never be shared
// between texts that differ in anything else.
describe('decision sharing by numeric shape', () => {
  let shapes: ShapeCache;
  let store: PolicyStore;
  before(async () => {
    await initParser();
    const dir = mkdtempSync(join(tmpdir(), 'shapes-'));
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, 'scopes:\n  "s":\n    role: r\n    allow:\n      - { actions: [select], tables: [t1, accounts] }\n');
    store = PolicyStore.load(file);
    shapes = new ShapeCache(store);
  });

  it('replaces only numeric literals', () => {
    assert.equal(numericShape('SELECT abalance FROM accounts WHERE aid = 12345;'), 'SELECT abalance FROM accounts WHERE aid = ?;');
    assert.equal(numericShape('select * from t where a=-1.5e3 and b IN (1,2) limit 0x1F'), 'select * from t where a=-? and b IN (?,?) limit ?');
    // Digits inside identifiers, including non-ASCII ones, are part of the name.
    assert.equal(numericShape('select a1, b_2 from t1'), null);
    assert.equal(numericShape('select * from tablé1'), null);
    // Texts with strings, quoted identifiers, parameters, escapes or comments are not shaped.
    for (const q of ["select 'x', 1", 'select "t1".a, 1', 'select $1, 1', 'select 1 -- x', 'select /* 1 */ 1', 'select E\'\\\\\' , 1']) {
      assert.equal(numericShape(q), null, q);
    }
  });

  it('a denied table is never served an allowed decision of a similar text', () => {
    assert.equal(shapes.check('select * from t1 where a = 1', ['s'], 's').allowed, true);
    assert.equal(shapes.check('select * from t2 where a = 1', ['s'], 's').allowed, false);
    assert.equal(shapes.check('select * from t1 where a = 2', ['s'], 's').allowed, true);
    assert.equal(shapes.check('select * from t2 where a = 2', ['s'], 's').allowed, false);
  });

  it('different literals of one shape share one decision (no parse per statement)', () => {
    const first = shapes.check('SELECT abalance FROM accounts WHERE aid = 1;', ['s'], 's');
    for (let i = 2; i < 50; i++) assert.equal(shapes.check(`SELECT abalance FROM accounts WHERE aid = ${i};`, ['s'], 's'), first);
    // Another scope set has its own entry.
    assert.equal(shapes.check('SELECT abalance FROM accounts WHERE aid = 7;', [], '').allowed, false);
  });
});
