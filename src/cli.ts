/** The command line: picks the subcommand; importing it runs nothing (bin/scopegate.js calls main). */
import cluster from 'node:cluster';
import { runServer } from './server/run.js';
import { WORKER_ANCHOR_ENV, WORKER_CONFIG_ENV } from './server/worker-ipc.js';

const USAGE = `usage:
  scopegate [--config FILE]            run the pooler (default config/scopegate.yaml)
  scopegate demo                       start an embedded PostgreSQL and scopegate in front of it
  scopegate token --scope S --sub U    mint a development token
  scopegate check --policy FILE --scopes S "SQL"   test a policy decision
  scopegate policy push --source URL FILE          store a policy as the source's next version
  scopegate policy show --source URL               print the source's current policy
  scopegate revoke --source URL (--jti ID | --sub SUBJECT) [--until TIME]   revoke on every instance`;

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  const eq = args.find((a) => a.startsWith(`${name}=`));
  return eq?.slice(name.length + 1);
}

export async function main(argv: string[]): Promise<void> {
  // A worker of `workers: N` (src/server/workers.ts) runs the primary's config, whatever the
  // command line was (node:cluster starts it with the primary's: `scopegate demo` too).
  const workerConfig = process.env[WORKER_CONFIG_ENV];
  if (cluster.isWorker && workerConfig !== undefined) {
    await runServer(workerConfig, process.env[WORKER_ANCHOR_ENV] ?? workerConfig);
    return;
  }
  const [cmd, ...rest] = argv;
  if (cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE + '\n');
    return;
  }
  if (cmd === 'check') {
    const { runCheck } = await import('./policy/index.js');
    process.exitCode = await runCheck(rest);
    return;
  }
  if (cmd === 'policy' || cmd === 'revoke') {
    const { runPolicy, runRevoke } = await import('./policy/source-cli.js');
    process.exitCode = cmd === 'policy' ? await runPolicy(rest) : await runRevoke(rest);
    return;
  }
  if (cmd === 'token') {
    const { runToken } = await import('./auth/index.js');
    process.exitCode = await runToken(rest);
    return;
  }
  if (cmd === 'demo') {
    const { runDemo } = await import('./demo.js');
    await runDemo(rest);
    return;
  }
  await runServer(argValue(argv, '--config') ?? 'config/scopegate.yaml');
}


/** Runs the CLI as a program: EPIPE on stdout ends it quietly, an error exits 1. */
export function runCli(argv: string[]): void {
  // `scopegate check ... | head`: a closed pipe ends the output, not the process with a stack.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  });
  main(argv).catch((err: unknown) => {
    process.stderr.write(`scopegate: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  });
}
