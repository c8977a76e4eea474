import { loadConfig } from './config.js';
import { ConfigError } from './errors.js';
import { parseAuthConfig } from './auth/index.js';
import { ClientAuthenticator } from './client-auth.js';
import { isLoopback, type Config } from './config.js';
import { SessionGate } from './gate.js';
import { initParser, SessionStateTracker } from './session-state.js';
import type { Logger } from 'pino';
import { dirname, resolve } from 'node:path';
import { createLogger } from './log.js';
import { Scopegate } from './server.js';

const USAGE = `usage:
  scopegate [--config FILE]            run the pooler (default config/scopegate.yaml)
  scopegate demo                       start an embedded PostgreSQL and scopegate in front of it
  scopegate token --scope S --sub U    mint a development token
  scopegate check --policy FILE --scopes S "SQL"   test a policy decision`;

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  const eq = args.find((a) => a.startsWith(`${name}=`));
  return eq?.slice(name.length + 1);
}

/** Builds authentication and statement checks from the config. */
export function buildGate(config: Config, log: Logger, anchor: string): SessionGate {
  const auth = parseAuthConfig(config.auth, dirname(resolve(anchor)));
  if (auth.method === 'trust' && !isLoopback(config.listen.host)) {
    throw new ConfigError('auth.method', 'trust is only allowed when listen.host is a loopback address');
  }
  if (auth.method === 'trust') log.warn('auth.method is trust: any client on loopback may connect without a token');
  return new SessionGate({
    log,
    auth: auth.method === 'oauth' ? new ClientAuthenticator(auth, log) : null,
    clockToleranceMs: auth.clockToleranceMs,
    sessionState: [...config.databases.values()].some((d) => d.pool_mode === 'transaction') ? new SessionStateTracker() : null,
  });
}

export async function runServer(configFile: string, anchor: string = configFile): Promise<void> {
  let config;
  try {
    config = loadConfig(configFile, anchor);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`scopegate: invalid config ${configFile}: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.log.level);
  await initParser();
  let gate: SessionGate;
  try {
    gate = buildGate(config, log, anchor);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`scopegate: invalid config ${configFile}: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const server = new Scopegate(config, log, gate);
  await server.listen();
  process.on('SIGHUP', () => {
    try {
      server.reload(loadConfig(configFile, anchor));
    } catch (err) {
      log.error({ err: (err as Error).message }, 'reload failed; keeping the running configuration');
    }
  });
  const stop = (): void => {
    void server.shutdown().then(() => {
      log.info('stopped');
      process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE + '\n');
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

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`scopegate: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
