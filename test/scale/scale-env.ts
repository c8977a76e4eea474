// Concern: the scale suites' shared knob: extra environment for the scopegate under test (allocator and V8 settings to compare).
import assert from 'node:assert/strict';

/**
 * `SG_SCALE_SG_ENV="K=V K=V"` as an environment object, merged over `base`; NODE_OPTIONS
 * values are appended to base's (e.g. `MALLOC_ARENA_MAX=2 NODE_OPTIONS=--max-semi-space-size=4`).
 */
export function scopegateEnv(base: Record<string, string> = {}): Record<string, string> {
  const env = { ...base };
  for (const kv of (process.env.SG_SCALE_SG_ENV ?? '').split(' ').filter((x) => x !== '')) {
    const eq = kv.indexOf('=');
    assert.ok(eq > 0, `SG_SCALE_SG_ENV: expected K=V, got ${kv}`);
    const k = kv.slice(0, eq);
    env[k] = k === 'NODE_OPTIONS' ? `${env[k] ?? ''} ${kv.slice(eq + 1)}`.trim() : kv.slice(eq + 1);
  }
  return env;
}
