/** The admin HTTP listener (admin.listen_http): /metrics, /healthz, /readyz, and nothing else. */
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { createMetrics } from './metrics.js';
import { readiness, type AdminServer } from './stats.js';

/** Where the answers come from: this process's server, or (workers: N) the primary's fan-out over its workers. */
export interface HttpSource {
  metrics(): Promise<{ contentType: string; text: string }>;
  readiness(): Promise<{ ready: boolean; body: unknown }>;
}

function localSource(srv: AdminServer): HttpSource {
  const registry: Registry = createMetrics(srv);
  return {
    metrics: async () => ({ contentType: registry.contentType, text: await registry.metrics() }),
    readiness: () => {
      const r = readiness(srv);
      return Promise.resolve({ ready: r.ready, body: r });
    },
  };
}

export class AdminHttp {
  private readonly source: HttpSource;
  private server: Server | null = null;

  constructor(srv: AdminServer | null, private readonly at: { host: string; port: number }, private readonly log: Logger, source?: HttpSource) {
    this.source = source ?? localSource(srv!);
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      const server = createServer((req, res) => {
        const path = (req.url ?? '').split('?')[0];
        const send = (status: number, type: string, body: string): void => {
          res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
          res.end(req.method === 'HEAD' ? undefined : body);
        };
        if (path !== '/metrics' && path !== '/healthz' && path !== '/readyz') { send(404, 'text/plain', 'not found\n'); return; }
        if (req.method !== 'GET' && req.method !== 'HEAD') { res.setHeader('allow', 'GET, HEAD'); send(405, 'text/plain', 'method not allowed\n'); return; }
        if (path === '/healthz') { send(200, 'text/plain', 'ok\n'); return; }
        if (path === '/readyz') {
          this.source.readiness().then(
            (r) => send(r.ready ? 200 : 503, 'application/json', `${JSON.stringify(r.body)}\n`),
            () => send(503, 'application/json', '{"ready":false}\n'),
          );
          return;
        }
        this.source.metrics().then(
          (m) => send(200, m.contentType, m.text),
          (err: unknown) => {
            this.log.error({ err: (err as Error).message }, 'metrics scrape failed');
            send(500, 'text/plain', 'metrics unavailable\n');
          },
        );
      });
      this.server = server;
      server.on('error', reject);
      server.listen(this.at.port, this.at.host, () => {
        const addr = server.address();
        const port = typeof addr === 'object' && addr ? addr.port : this.at.port;
        this.log.info({ host: this.at.host, port }, 'admin http listening');
        resolve(port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.server === null) { resolve(); return; }
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
