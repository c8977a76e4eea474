/** Peering (PgBouncer's peer_id / [peers]): this instance's id in cancel keys, and forwarding cancels to the instance that issued them. */
import { randomInt } from 'node:crypto';
import type { Socket } from 'node:net';
import { connectServer } from '../backend/connect.js';
import type { Logger } from 'pino';
import { ConfigError } from '../errors.js';
import { CANCEL_REQUEST } from '../protocol/codes.js';
import type { CancelRouting } from './cancel-registry.js';
import { parseServerTls, type ServerTlsConfig } from './tls-config.js';

/** One entry of `peers:`: another scopegate instance that hands out cancel keys with `id` in them. */
export interface PeerConfig {
  id: number;
  host: string;
  port: number;
  /** TLS to the peer: the global server_tls, or the entry's own (libpq's sslmodes, as for databases). */
  server_tls: ServerTlsConfig;
}

/** `peer_id` and `peers`: peer_id 0 is peering off. */
export interface PeeringConfig {
  peer_id: number;
  peers: readonly PeerConfig[];
}

/*
 * The secret half of a cancel key (the pid half stays 31 random bits, so the local registry,
 * keyed by pid, keeps its room):
 *   bits 31..18  the id of the instance that issued the key (1..16383)
 *   bits 17..16  hops left: 3 when issued, one less per forward, 0 is never forwarded
 *   bits 15..0   random
 * 31 + 16 = 47 random bits per key, as many as PgBouncer keeps (it uses the same budget: id,
 * two hop bits, the rest random).
 */
export const MAX_PEER_ID = (1 << 14) - 1;
const ID_SHIFT = 18;
const HOPS_SHIFT = 16;
const HOPS_MASK = 0x3 << HOPS_SHIFT;
const MAX_HOPS = 3;
/** At most this many forwards in flight: a flood of CancelRequests opens no more sockets than this. */
export const MAX_FORWARDS_IN_FLIGHT = 16;
/** A peer that does not take the cancel within this long is given up on (the slot is freed). */
const FORWARD_TIMEOUT_MS = 5_000;
/** A peer that is down is warned about at most this often (a cancel flood must not flood the log). */
const WARN_EVERY_MS = 10_000;

function int(v: unknown, key: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(key, `expected an integer between ${min} and ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Why a cancel was not forwarded: unknown_key (it names this instance, no client holds it),
 * unknown_peer (no configured peer has its id), hop_limit (forwarded 3 times already),
 * forward_limit (MAX_FORWARDS_IN_FLIGHT reached).
 */
export type DropReason = 'unknown_key' | 'unknown_peer' | 'hop_limit' | 'forward_limit';

/** Validates top-level `peer_id` and `peers` (config.ts calls this); `serverTls` is the global server_tls. */
export function parsePeering(rawId: unknown, rawPeers: unknown, baseDir: string, serverTls: ServerTlsConfig): PeeringConfig {
  const peer_id = rawId === undefined || rawId === null ? 0 : int(rawId, 'peer_id', 0, MAX_PEER_ID);
  if (rawPeers === undefined || rawPeers === null) return { peer_id, peers: [] };
  if (!Array.isArray(rawPeers)) throw new ConfigError('peers', 'expected a list of { id, host, port }');
  const peers: PeerConfig[] = [];
  const seen = new Set<number>();
  rawPeers.forEach((p: unknown, i) => {
    const at = `peers[${i}]`;
    if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new ConfigError(at, 'expected { id, host, port }');
    const o = p as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!['id', 'host', 'port', 'server_tls'].includes(k)) throw new ConfigError(`${at}.${k}`, 'unknown key (expected id, host, port, server_tls)');
    const id = int(o.id, `${at}.id`, 1, MAX_PEER_ID);
    if (seen.has(id)) throw new ConfigError(`${at}.id`, `peer id ${id} is listed twice`);
    seen.add(id);
    if (typeof o.host !== 'string' || o.host === '') throw new ConfigError(`${at}.host`, 'expected a host name or address');
    peers.push({ id, host: o.host, port: int(o.port, `${at}.port`, 1, 65535), server_tls: parseServerTls(o.server_tls, `${at}.server_tls`, baseDir, serverTls) });
  });
  return { peer_id, peers };
}

/** The issuing instance's id encoded in a cancel secret. */
export function peerIdOf(secret: number): number {
  return (secret >>> ID_SHIFT) & MAX_PEER_ID;
}

/** Hops a cancel secret may still be forwarded. */
export function hopsOf(secret: number): number {
  return (secret & HOPS_MASK) >>> HOPS_SHIFT;
}

/** A secret issued by instance `id` with the full hop budget (tests build keys with it too). */
export function issueSecret(id: number, random16: number): number {
  return ((id << ID_SHIFT) | (MAX_HOPS << HOPS_SHIFT) | (random16 & 0xffff)) | 0;
}

/**
 * Stamps cancel keys with this instance's id and forwards CancelRequests whose key names a
 * configured peer. It only relays the 16 bytes it was given (with one hop less), so a client
 * can cancel through a peer exactly what it could cancel on the issuing instance: nothing
 * without the key. Cancels get no reply in the protocol, so whatever is not forwarded is
 * dropped silently.
 */
export class CancelPeers implements CancelRouting {
  private readonly id: number;
  private peers = new Map<number, PeerConfig>();
  private inFlight = 0;
  /** For /metrics: forwards opened, forwards that failed (peer down, timeout), cancels dropped by reason. */
  forwarded = 0;
  failed = 0;
  readonly dropped = new Map<DropReason, number>();
  /** Per peer id: when its last failure was logged, and failures since then. */
  private readonly warned = new Map<number, { at: number; suppressed: number }>();

  constructor(cfg: PeeringConfig, private readonly log: Logger) {
    this.id = cfg.peer_id;
    this.setPeers(cfg.peers);
  }

  get enabled(): boolean {
    return this.id !== 0;
  }

  /** peers: reloads; peer_id needs a restart (keys already handed out carry the old id). */
  reload(cfg: PeeringConfig): void {
    if (cfg.peer_id !== this.id) this.log.warn({ peer_id: this.id, next: cfg.peer_id }, 'peer_id changed: restart scopegate to apply it');
    this.setPeers(cfg.peers);
  }

  private setPeers(list: readonly PeerConfig[]): void {
    // An entry with this instance's own id is ignored, so every instance can share one list.
    this.peers = new Map(list.filter((p) => p.id !== this.id).map((p) => [p.id, p]));
  }

  stamp(secret: number): number {
    if (!this.enabled) return secret;
    return issueSecret(this.id, randomInt(0, 0x10000));
  }

  canonical(secret: Buffer): Buffer {
    if (!this.enabled || secret.length !== 4) return secret;
    // Keys are stored with the full hop budget; one that came through peers has fewer left.
    const s = secret.readUInt32BE(0) | HOPS_MASK;
    const out = Buffer.allocUnsafe(4);
    out.writeUInt32BE(s >>> 0, 0);
    return out;
  }

  elsewhere(pid: number, secret: Buffer): void {
    if (!this.enabled || secret.length !== 4) return;
    const s = secret.readUInt32BE(0);
    const id = peerIdOf(s);
    if (id === this.id) return this.drop('unknown_key', id);
    const peer = this.peers.get(id);
    if (peer === undefined) return this.drop('unknown_peer', id);
    const hops = hopsOf(s);
    if (hops === 0) return this.drop('hop_limit', id);
    if (this.inFlight >= MAX_FORWARDS_IN_FLIGHT) return this.drop('forward_limit', id);
    const packet = Buffer.allocUnsafe(16);
    packet.writeInt32BE(16, 0);
    packet.writeInt32BE(CANCEL_REQUEST, 4);
    packet.writeInt32BE(pid, 8);
    packet.writeUInt32BE(((s & ~HOPS_MASK) | ((hops - 1) << HOPS_SHIFT)) >>> 0, 12);
    this.send(peer, packet, hops - 1);
  }

  private drop(reason: DropReason, peer: number): void {
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + 1);
    if (this.log.isLevelEnabled('debug')) this.log.debug({ peer, reason }, 'cancel request dropped');
  }

  private send(peer: PeerConfig, packet: Buffer, hopsLeft: number): void {
    this.inFlight++;
    this.forwarded++;
    if (this.log.isLevelEnabled('debug')) this.log.debug({ peer: peer.id, host: peer.host, port: peer.port, hops_left: hopsLeft }, 'cancel request forwarded to peer');
    let s: Socket | null = null;
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      this.inFlight--;
      clearTimeout(timer);
      s?.destroy();
      if (err === undefined) return;
      this.failed++;
      const now = Date.now();
      const w = this.warned.get(peer.id);
      if (w !== undefined && now - w.at < WARN_EVERY_MS) { w.suppressed++; return; }
      this.warned.set(peer.id, { at: now, suppressed: 0 });
      this.log.warn({ peer: peer.id, host: peer.host, port: peer.port, err: err.message, failures_not_logged: w?.suppressed ?? 0 }, 'forwarding a cancel request to a peer failed');
    };
    const timer = setTimeout(() => finish(new Error('timed out')), FORWARD_TIMEOUT_MS);
    // TLS as server_tls says (a peer answers SSLRequest like any scopegate listener).
    connectServer({ name: `peer ${peer.id}`, host: peer.host, port: peer.port, server_tls: peer.server_tls }, (sock) => {
      s = sock;
      sock.on('error', (err) => finish(err));
    }).then((ready) => {
      // The peer closes the connection once it has acted on the cancel (as Postgres does).
      ready.on('close', () => finish());
      ready.end(packet);
    }, (err: Error) => finish(err));
  }
}
