/**
 * fast-check generators of frontend byte sequences for the protocol fuzz suite
 * (test/fuzz/protocol.fuzz.test.ts). This module defines no tests.
 *
 * A case is a session state to reach first (the prelude, run by the driver with valid
 * messages) and a list of steps sent after it. Every step carries its bytes, a readable
 * label (printed for a counterexample) and what it does to the framing:
 *
 * - intact: the stream is still aligned on a message boundary after it (a truncated
 *   message or a length field that lies leaves it misaligned);
 * - fatal: scopegate must answer it with an ErrorResponse and close (bad length, a message
 *   past the size limit, an unknown message type), when it is reached on an aligned stream;
 * - ends: the client asked to end the session (Terminate), or the step ends a startup-phase
 *   connection by design (CancelRequest);
 * - throws: scopegate may end the session while reading it.

 */
import fc from 'fast-check';
import { CANCEL_REQUEST, PROTOCOL_3_0, SSL_REQUEST, startupPacket, typed } from '../harness/rawclient.js';

export const GSSENC_REQUEST = 80877104;

export interface Step {
  label: string;
  bytes: Buffer;
  intact: boolean;
  fatal: boolean;
  ends: boolean;
  /** scopegate may end the session while reading it (a FATAL refusal, Terminate, garbage). */
  throws?: boolean;
}

/** Where the bad client is when its steps start. */
export type State = 'startup' | 'auth-password' | 'auth-sasl' | 'idle' | 'tx' | 'copy' | 'copy-extended' | 'ext-error';
export const STATES: readonly State[] = ['startup', 'auth-password', 'auth-sasl', 'idle', 'tx', 'copy', 'copy-extended', 'ext-error'];

/** Which token the bad client logs in with in the logged-in states. */
export type Persona = 'admin' | 'reader';

export interface Case {
  state: State;
  persona: Persona;
  /** ext-error: the failing Parse that starts the state. */
  failingParse: string;
  steps: Step[];
  /** Sizes of the first writes the steps' bytes are cut into (the rest goes in one write). */
  chunks: number[];
}

/** Limits the fixture configures (small, so oversized cases stay cheap). */
export interface Limits {
  maxLoginPacket: number;
  maxPacket: number;
  maxStatement: number;
}

/** What the generators need from the running fixture. */
export interface GenContext {
  limits: Limits;
  /** Valid tokens: the bad client's own (by persona), and one for another user. */
  tokens: Record<Persona, string>;
  otherUserToken: string;
}

const MAX_STEPS = 8;

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

function int16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n, 0);
  return b;
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n | 0, 0);
  return b;
}

function show(s: string, max = 48): string {
  const j = JSON.stringify(s);
  return j.length > max ? `${j.slice(0, max)}…(${s.length} chars)` : j;
}

function hex(b: Buffer, max = 24): string {
  const h = b.subarray(0, max).toString('hex');
  return b.length > max ? `${h}…(${b.length} bytes)` : h;
}

function ok(label: string, bytes: Buffer): Step {
  return { label, bytes, intact: true, fatal: false, ends: false };
}

/** Message types a logged-in scopegate session understands (everything else is FATAL 08P01). */
const KNOWN_TYPES = new Set([...'BCDEHPQSXdcfFp'].map((c) => c.charCodeAt(0)));

/** Statements the bad client sends: valid, refused, failing, session-changing, COPY, garbage. */
export const SQL: readonly string[] = [
  'SELECT 1',
  'SELECT count(*) FROM orders',
  'SELECT * FROM secrets',
  'SELECT id, email FROM customers',
  'SELECT 1/0',
  'SELECT * FROM no_such_table',
  'SELEC garbage FROM',
  '',
  ';',
  'SELECT 1; SELECT 2',
  'SELECT $1::int',
  'BEGIN',
  'COMMIT',
  'ROLLBACK',
  'BEGIN; SELECT 1',
  'COMMIT; BEGIN',
  'START TRANSACTION ISOLATION LEVEL SERIALIZABLE',
  'SAVEPOINT fz',
  'ROLLBACK TO SAVEPOINT fz',
  'RELEASE fz',
  'PREPARE TRANSACTION \'fz\'',
  "SET search_path = pg_catalog, public",
  "SET work_mem = '7MB'",
  "SET application_name = 'fuzzed'",
  "SET statement_timeout = '10min'",
  "SET LOCAL work_mem = '5MB'",
  "SELECT set_config('work_mem', '9MB', false)",
  'RESET ALL',
  'SET ROLE postgres',
  'RESET ROLE',
  'SET SESSION AUTHORIZATION postgres',
  "SET scopegate.sub = 'mallory'",
  "SELECT set_config('role', 'app_admin', false)",
  'SET standard_conforming_strings = off',
  "SET client_encoding = 'LATIN1'",
  'SELECT pg_advisory_lock(42)',
  'SELECT pg_advisory_xact_lock(43)',
  'SELECT pg_try_advisory_lock(44)',
  'CREATE TEMP TABLE fz_tmp (a int)',
  'CREATE TEMP TABLE IF NOT EXISTS fz_tmp2 AS SELECT 1 AS a',
  'PREPARE fz_p AS SELECT 1',
  'EXECUTE fz_p',
  'DEALLOCATE ALL',
  'DISCARD ALL',
  'DECLARE fz_c CURSOR WITH HOLD FOR SELECT 1',
  'DECLARE fz_c2 CURSOR FOR SELECT 1',
  'FETCH fz_c',
  'CLOSE ALL',
  'LISTEN fz_chan',
  'NOTIFY fz_chan',
  'UNLISTEN *',
  'COPY fuzz_sink FROM STDIN',
  'COPY (SELECT 1) TO STDOUT',
  "INSERT INTO fuzz_sink VALUES (1, 'x')",
  'DO $$ BEGIN PERFORM 1; END $$',
  'VACUUM fuzz_sink',
  'SELECT pg_sleep(0.005)',
];

const sqlText = (lim: Limits): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...SQL) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 24 }) },
    // Past max_statement_size but within max_packet_size: 54000, the session goes on.
    { weight: 1, arbitrary: fc.integer({ min: lim.maxStatement + 1, max: lim.maxPacket - 64 }).map((n) => `SELECT '${'x'.repeat(n)}'`) },
  );

const stmtName = fc.constantFrom('', '', 's1', 's2', 'sg_closed', 'fz_p', 'n'.repeat(70));
const portalName = fc.constantFrom('', '', 'p1', 'fz_c');
const bytes = (max: number): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength: max }).map((u) => Buffer.from(u));

/** Well-framed messages of the logged-in phase: valid, out of order, malformed bodies. */
function sessionMessage(ctx: GenContext): fc.Arbitrary<Step> {
  const lim = ctx.limits;
  const query = sqlText(lim).map((sql) => ok(`Query(${show(sql)})`, typed('Q', cstr(sql))));
  const parse = fc
    .record({ name: stmtName, sql: sqlText(lim), types: fc.array(fc.constantFrom(0, 23, 25, 16, 2249, -1, 0x7fffffff), { maxLength: 3 }) })
    .map(({ name, sql, types }) => ok(`Parse(${show(name)}, ${show(sql)}, [${types.join(',')}])`, typed('P', Buffer.concat([cstr(name), cstr(sql), int16(types.length), ...types.map(int32)]))));
  const bind = fc
    .record({
      portal: portalName,
      stmt: stmtName,
      formats: fc.array(fc.constantFrom(0, 1, 2, -1), { maxLength: 2 }),
      params: fc.array(fc.option(fc.constantFrom('1', 'abc', '', '\u00e9'), { nil: null }), { maxLength: 3 }),
      countDelta: fc.constantFrom(0, 0, 0, 1, -1, 1000),
      results: fc.array(fc.constantFrom(0, 1, 7), { maxLength: 2 }),
    })
    .map(({ portal, stmt, formats, params, countDelta, results }) => {
      const parts: Buffer[] = [cstr(portal), cstr(stmt), int16(formats.length), ...formats.map(int16), int16(params.length + countDelta)];
      for (const p of params) {
        if (p === null) parts.push(int32(-1));
        else { const v = Buffer.from(p, 'utf8'); parts.push(int32(v.length), v); }
      }
      parts.push(int16(results.length), ...results.map(int16));
      return ok(`Bind(${show(portal)}, ${show(stmt)}, fmt[${formats}], ${JSON.stringify(params)}${countDelta ? ` count${countDelta > 0 ? '+' : ''}${countDelta}` : ''}, res[${results}])`, typed('B', Buffer.concat(parts)));
    });
  const describe = fc
    .record({ kind: fc.constantFrom('S', 'P', 'X'), name: fc.oneof(stmtName, portalName) })
    .map(({ kind, name }) => ok(`Describe(${kind}, ${show(name)})`, typed('D', Buffer.concat([Buffer.from(kind), cstr(name)]))));
  const execute = fc
    .record({ portal: portalName, max: fc.constantFrom(0, 1, -1, 2 ** 31 - 1) })
    .map(({ portal, max }) => ok(`Execute(${show(portal)}, ${max})`, typed('E', Buffer.concat([cstr(portal), int32(max)]))));
  const close = fc
    .record({ kind: fc.constantFrom('S', 'P', 'Q'), name: fc.oneof(stmtName, portalName) })
    .map(({ kind, name }) => ok(`Close(${kind}, ${show(name)})`, typed('C', Buffer.concat([Buffer.from(kind), cstr(name)]))));
  const sync = fc.constant(ok('Sync', typed('S')));
  const flush = fc.constant(ok('Flush', typed('H')));
  const copyData = fc
    .oneof(fc.constantFrom('1\tone\n', '2\t\\N\n', 'not a number\tx\n', '\\.\n', ''), fc.string({ unit: 'binary', maxLength: 32 }))
    .map((s) => ok(`CopyData(${show(s)})`, typed('d', Buffer.from(s, 'utf8'))));
  const copyDataBig = fc.integer({ min: lim.maxStatement, max: lim.maxPacket - 8 }).map((n) => ok(`CopyData(${n} bytes)`, typed('d', Buffer.alloc(n, 0x41))));
  const copyDone = fc.constant(ok('CopyDone', typed('c')));
  const copyFail = fc.string({ maxLength: 16 }).map((s) => ok(`CopyFail(${show(s)})`, typed('f', cstr(s))));
  const functionCall = bytes(24).map((b) => ok(`FunctionCall(${hex(b)})`, typed('F', b)));
  const password = fc.oneof(fc.constant(ctx.tokens.admin), fc.string({ maxLength: 16 })).map((s): Step => ({ ...ok(`PasswordMessage(${show(s, 24)})`, typed('p', cstr(s))), throws: true }));
  /** A known type with a body of random bytes (missing NULs, short fields). */
  const malformed = fc
    .record({ type: fc.constantFrom(...'BCDEHPQSdcfF'), body: bytes(12) })
    .map(({ type, body }): Step => ({ ...ok(`${type}-malformed(${hex(body)})`, typed(type, body)), throws: true }));
  const unknown = fc
    .record({ type: fc.integer({ min: 0, max: 255 }).filter((t) => !KNOWN_TYPES.has(t)), body: bytes(12) })
    .map(({ type, body }): Step => ({ label: `unknown-type(0x${type.toString(16)}, ${hex(body)})`, bytes: typed(String.fromCharCode(type), body), intact: true, fatal: true, ends: false, throws: true }));
  /** A startup-phase packet inside a logged-in session (its length word is read as a type byte + length). */
  const startupAgain = fc.constantFrom('startup', 'ssl', 'cancel').map((k): Step => {
    const b = k === 'startup' ? startupPacket({ user: 'fuzz', database: 'app' }) : k === 'ssl' ? untyped(SSL_REQUEST, Buffer.alloc(0)) : untyped(CANCEL_REQUEST, Buffer.alloc(8));
    // Read as type 0x00 with a length made of the packet's next 4 bytes: refused once that
    // much has arrived (or at once, when the length is past max_packet_size).
    return { label: `${k}-packet-after-login(${hex(b)})`, bytes: b, intact: false, fatal: false, ends: false, throws: true };
  });
  const terminate = fc.constant<Step>({ label: 'Terminate', bytes: typed('X'), intact: true, fatal: false, ends: true, throws: true });
  return fc.oneof(
    { weight: 6, arbitrary: query },
    { weight: 5, arbitrary: parse },
    { weight: 5, arbitrary: bind },
    { weight: 3, arbitrary: describe },
    { weight: 4, arbitrary: execute },
    { weight: 2, arbitrary: close },
    { weight: 4, arbitrary: sync },
    { weight: 1, arbitrary: flush },
    { weight: 3, arbitrary: copyData },
    { weight: 1, arbitrary: copyDataBig },
    { weight: 2, arbitrary: copyDone },
    { weight: 2, arbitrary: copyFail },
    { weight: 1, arbitrary: functionCall },
    { weight: 1, arbitrary: password },
    { weight: 3, arbitrary: malformed },
    { weight: 1, arbitrary: unknown },
    { weight: 1, arbitrary: startupAgain },
    { weight: 1, arbitrary: terminate },
  );
}

/** COPY FROM STDIN sub-protocol messages, weighted up inside COPY. */
function copyMessage(): fc.Arbitrary<Step> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom('1\tone\n', '2\ttwo\n3\tthree\n', 'x\ty\n', '1\n', '1\t2\t3\n', '\\.\n').map((s) => ok(`CopyData(${show(s)})`, typed('d', Buffer.from(s)))) },
    { weight: 2, arbitrary: bytes(24).map((b) => ok(`CopyData(${hex(b)})`, typed('d', b))) },
    { weight: 2, arbitrary: fc.constant(ok('CopyDone', typed('c'))) },
    { weight: 2, arbitrary: fc.constant(ok('CopyFail("fz")', typed('f', cstr('fz')))) },
    { weight: 1, arbitrary: bytes(6).map((b) => ok(`CopyFail-unterminated(${hex(b)})`, typed('f', b))) },
  );
}

/** A typed message whose length field is bad: < 4, negative, past max_packet_size, or lying about the body. */
function badFrame(maxPacket: number, ctx: GenContext): fc.Arbitrary<Step> {
  const tooSmall = fc
    .record({ type: fc.constantFrom(...'QPBSEdp'), len: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: -(2 ** 31), max: -1 })), tail: bytes(8) })
    .map(({ type, len, tail }): Step => ({ label: `${type}-length(${len})`, bytes: Buffer.concat([Buffer.from(type), int32(len), tail]), intact: false, fatal: true, ends: false }));
  const tooBig = fc
    .record({ type: fc.constantFrom(...'QPBdp'), len: fc.oneof(fc.integer({ min: maxPacket + 1, max: maxPacket + 64 }), fc.integer({ min: maxPacket + 1, max: 2 ** 31 - 1 })), sent: fc.integer({ min: 0, max: 64 }) })
    .map(({ type, len, sent }): Step => ({ label: `${type}-oversized(length ${len}, ${sent} body bytes sent)`, bytes: Buffer.concat([Buffer.from(type), int32(len), Buffer.alloc(sent, 0x20)]), intact: false, fatal: true, ends: false }));
  const base = sessionMessage(ctx).filter((s) => s.intact && !s.fatal && s.bytes.length >= 5);
  const longer = fc
    .record({ m: base, extra: fc.integer({ min: 1, max: 64 }) })
    .map(({ m, extra }): Step => {
      const b = Buffer.from(m.bytes);
      b.writeInt32BE(b.readInt32BE(1) + extra, 1);
      return { label: `${m.label} with length +${extra} (truncated)`, bytes: b, intact: false, fatal: false, ends: false };
    });
  const shorter = fc
    .record({ m: base.filter((s) => s.bytes.length > 5), cut: fc.integer({ min: 1, max: 64 }) })
    .map(({ m, cut }): Step => {
      const b = Buffer.from(m.bytes);
      const len = b.readInt32BE(1);
      const d = Math.min(cut, len - 4);
      b.writeInt32BE(len - d, 1);
      return { label: `${m.label} with length -${d} (rest read as next message)`, bytes: b, intact: false, fatal: false, ends: false };
    });
  const cut = fc
    .record({ m: base, keep: fc.integer({ min: 1, max: 8 }) })
    .map(({ m, keep }): Step => ({ label: `${m.label} cut after ${Math.min(keep, m.bytes.length - 1)} bytes`, bytes: m.bytes.subarray(0, Math.min(keep, m.bytes.length - 1)), intact: false, fatal: false, ends: false }));
  return fc.oneof(tooSmall, tooBig, longer, shorter, cut).map((s): Step => ({ ...s, throws: true }));
}

function untyped(code: number, rest: Buffer): Buffer {
  const b = Buffer.concat([int32(0), int32(code), rest]);
  b.writeInt32BE(b.length, 0);
  return b;
}

/** Startup-phase packets: StartupMessage variants, SSL/GSSENC/Cancel requests, bad lengths, typed messages too early. */
function startupStep(ctx: GenContext): fc.Arbitrary<Step> {
  const params = fc.record(
    {
      user: fc.constantFrom('fuzz', '', 'x'.repeat(64), 'postgres'),
      database: fc.constantFrom('app', '', 'nosuchdb', 'postgres'),
      options: fc.constantFrom('-c search_path=pg_catalog', '-c work_mem=3MB', '--role=postgres', '-c', 'bogus', '-c statement_timeout=1'),
      application_name: fc.constantFrom('fz', ''),
      replication: fc.constantFrom('true', 'database', 'false'),
      _pq_: fc.constant('x'),
    },
    { requiredKeys: ['user'] },
  );
  const startup = fc
    .record({ p: params, code: fc.constantFrom(PROTOCOL_3_0, PROTOCOL_3_0, PROTOCOL_3_0 + 1, PROTOCOL_3_0 + 2, 0x20000, 0x40000, 1234) })
    .map(({ p, code }) => {
      const kv: Record<string, string> = {};
      for (const [k, v] of Object.entries(p)) kv[k === '_pq_' ? '_pq_.fuzz' : k] = v as string;
      return ok(`StartupMessage(0x${code.toString(16)}, ${JSON.stringify(kv)})`, startupPacket(kv, code));
    });
  const ssl = fc.constant(ok('SSLRequest', untyped(SSL_REQUEST, Buffer.alloc(0))));
  const gss = fc.constant(ok('GSSENCRequest', untyped(GSSENC_REQUEST, Buffer.alloc(0))));
  const cancel = fc
    .record({ pid: fc.integer(), secret: fc.integer(), short: fc.boolean() })
    .map(({ pid, secret, short }): Step => ({
      label: `CancelRequest(${pid}, ${secret}${short ? ', 12 bytes' : ''})`,
      bytes: untyped(CANCEL_REQUEST, short ? int32(pid) : Buffer.concat([int32(pid), int32(secret)])),
      intact: true,
      fatal: false,
      ends: true,
    }));
  const badLength = fc
    .record({ len: fc.oneof(fc.integer({ min: -(2 ** 31), max: 7 }), fc.integer({ min: 10_001, max: 2 ** 31 - 1 })), tail: bytes(8) })
    .map(({ len, tail }): Step => ({ label: `startup-length(${len})`, bytes: Buffer.concat([int32(len), int32(PROTOCOL_3_0), tail]), intact: false, fatal: true, ends: false }));
  const noTerminator = fc.constant(ok('StartupMessage-without-terminator', (() => {
    const b = startupPacket({ user: 'fuzz', database: 'app' });
    return untyped(PROTOCOL_3_0, b.subarray(8, b.length - 1));
  })()));
  const truncated = startup.map((s): Step => ({ ...s, label: `${s.label} truncated`, bytes: s.bytes.subarray(0, Math.max(1, s.bytes.length - 3)), intact: false }));
  const garbageCode = fc.record({ code: fc.integer(), body: bytes(16) }).map(({ code, body }) => ok(`startup-code(${code}, ${hex(body)})`, untyped(code, body)));
  // Logged-in messages before any startup: their type byte and length read as a startup length.
  const early = sessionMessage(ctx).map((s): Step => ({ ...s, label: `${s.label} before startup`, intact: false, fatal: false }));
  const password = fc.constantFrom(ctx.tokens.admin, ctx.otherUserToken, 'garbage').map((t) => ok(`PasswordMessage(${show(t, 24)})`, typed('p', cstr(t))));
  return fc.oneof(
    { weight: 5, arbitrary: startup },
    { weight: 2, arbitrary: ssl },
    { weight: 2, arbitrary: gss },
    { weight: 1, arbitrary: cancel },
    { weight: 2, arbitrary: badLength },
    { weight: 1, arbitrary: noTerminator },
    { weight: 1, arbitrary: truncated },
    { weight: 1, arbitrary: garbageCode },
    { weight: 1, arbitrary: early },
    { weight: 2, arbitrary: password },
  );
}

/** Messages while scopegate waits for a password or a SASL message. */
function authStep(ctx: GenContext, sasl: boolean): fc.Arbitrary<Step> {
  const lim = ctx.limits;
  const token = fc.constantFrom(ctx.tokens.admin, ctx.otherUserToken, 'not-a-jwt', 'eyJhbGciOiJub25lIn0.e30.', '');
  const cleartext = fc
    .record({ t: token, nul: fc.boolean() })
    .map(({ t, nul }) => ok(`PasswordMessage(${show(t, 24)}${nul ? '' : ', no NUL'})`, typed('p', nul ? cstr(t) : Buffer.from(t))));
  const garbage = bytes(40).map((b) => ok(`PasswordMessage(${hex(b)})`, typed('p', b)));
  const saslData = fc.oneof(
    token.map((t) => `n,,\x01auth=Bearer ${t}\x01\x01`),
    fc.constant('n,,\x01auth=\x01\x01'),
    fc.constant('n,a=mallory,\x01auth=Bearer x\x01\x01'),
    fc.constant('y,,\x01auth=Bearer x\x01\x01'),
    fc.constant('p=tls-unique,,\x01\x01'),
    fc.string({ unit: 'binary', maxLength: 24 }),
  );
  const initial = fc
    .record({ mech: fc.constantFrom('OAUTHBEARER', 'OAUTHBEARER', 'SCRAM-SHA-256', ''), data: saslData, lenDelta: fc.constantFrom(0, 0, 0, 5, -3, 'minus1' as const) })
    .map(({ mech, data, lenDelta }) => {
      const d = Buffer.from(data, 'utf8');
      const len = lenDelta === 'minus1' ? -1 : d.length + lenDelta;
      return ok(`SASLInitialResponse(${show(mech)}, ${show(data, 32)}, len ${len})`, typed('p', Buffer.concat([cstr(mech), int32(len), d])));
    });
  const ack = fc.constantFrom(Buffer.from([1]), Buffer.alloc(0), Buffer.from('xx')).map((b) => ok(`SASLResponse(${hex(b)})`, typed('p', b)));
  const oversized = fc.integer({ min: lim.maxLoginPacket + 1, max: lim.maxLoginPacket + 2048 }).map((n): Step => ({ label: `PasswordMessage(${n} bytes, past max_login_packet_size)`, bytes: Buffer.concat([Buffer.from('p'), int32(n), Buffer.alloc(Math.min(n - 4, 512), 0x41)]), intact: false, fatal: true, ends: false }));
  const other = sessionMessage(ctx);
  return fc.oneof(
    { weight: sasl ? 1 : 4, arbitrary: cleartext },
    { weight: 2, arbitrary: garbage },
    { weight: sasl ? 4 : 1, arbitrary: initial },
    { weight: sasl ? 2 : 1, arbitrary: ack },
    { weight: 1, arbitrary: oversized },
    { weight: 1, arbitrary: badFrame(lim.maxLoginPacket, ctx) },
    { weight: 2, arbitrary: other },
  );
}

/** Parses that fail before Sync: refused by scopegate (policy, unparseable) or by the server. */
export const FAILING_PARSES: readonly string[] = ['SELEC broken', 'SELECT * FROM no_such_table', 'SELECT 1 FROM orders WHERE', 'SELECT $1::no_such_type'];

export function caseArbitrary(ctx: GenContext): fc.Arbitrary<Case> {
  const session = sessionMessage(ctx);
  const framingS = badFrame(ctx.limits.maxPacket, ctx);
  const logged = (extra: fc.Arbitrary<Step> | null): fc.Arbitrary<Step[]> => {
    return fc.array(
      fc.oneof({ weight: 12, arbitrary: session }, { weight: 1, arbitrary: framingS }, ...(extra === null ? [] : [{ weight: 8, arbitrary: extra }])),
      { minLength: 1, maxLength: MAX_STEPS },
    );
  };
  const extErrorFollow = fc.oneof(
    session.filter((s) => /^(Bind|Execute|Describe|Close|Flush|Parse)/.test(s.label)),
  );
  const stepsFor = (state: State): fc.Arbitrary<Step[]> => {
    switch (state) {
      case 'startup': return fc.array(startupStep(ctx), { minLength: 1, maxLength: 4 });
      case 'auth-password': return fc.array(authStep(ctx, false), { minLength: 1, maxLength: 4 });
      case 'auth-sasl': return fc.array(authStep(ctx, true), { minLength: 1, maxLength: 4 });
      case 'copy': case 'copy-extended': return logged(copyMessage());
      case 'ext-error': return logged(extErrorFollow);
      default: return logged(null);
    }
  };
  return fc.constantFrom(...STATES).chain((state) =>
    fc.record({
      state: fc.constant(state),
      persona: fc.constantFrom<Persona>('admin', 'admin', 'reader'),
      failingParse: fc.constantFrom(...FAILING_PARSES),
      steps: stepsFor(state),
      chunks: fc.array(fc.integer({ min: 1, max: 24 }), { maxLength: 3 }),
    }),
  );
}

/** A readable form of a case, for the counterexample report. */
export function describeCase(c: Case): string {
  const lines = [`state=${c.state} persona=${c.persona}${c.state === 'ext-error' ? ` failingParse=${show(c.failingParse)}` : ''} chunks=[${c.chunks.join(',')}]`];
  c.steps.forEach((s, i) => lines.push(`  ${i + 1}. ${s.label}${s.fatal ? '  [must be refused]' : ''}${s.intact ? '' : '  [misaligns the stream]'}  bytes=${hex(s.bytes, 40)}`));
  return lines.join('\n');
}
