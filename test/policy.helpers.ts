import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** config/policy.yaml, found upwards from the compiled test (dist/test) or the working directory. */
export function examplePolicyPath(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const p = join(dir, 'config', 'policy.yaml');
    if (existsSync(p)) return p;
    if (dirname(dir) === dir) break;
  }
  return resolve('config/policy.yaml');
}

/** config/policy-tenants.yaml (row filters and masks), found like the example policy. */
export function tenantPolicyPath(): string {
  return join(dirname(examplePolicyPath()), 'policy-tenants.yaml');
}
