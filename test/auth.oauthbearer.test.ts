import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthError, type AuthCheck } from '../src/auth/errors.js';
import {
  parseOAuthBearerInitial, oauthBearerFailure, checkOAuthBearerErrorAck, oauthBearerInitialResponse, discoveryUrlFor,
} from '../src/auth/oauthbearer.js';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl';
const b = (s: string) => Buffer.from(s, 'latin1');

function throwsWith(fn: () => unknown, code: string, check: AuthCheck, detail?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof AuthError, String(err));
    assert.equal(err.code, code);
    assert.equal(err.check, check);
    if (detail) assert.match(err.detail ?? '', detail);
    assert.ok(!err.message.includes(TOKEN) && !(err.detail ?? '').includes(TOKEN));
    return true;
  });
}

test('valid initial responses', () => {
  assert.deepEqual(parseOAuthBearerInitial(b(`n,,\x01auth=Bearer ${TOKEN}\x01\x01`)), { kind: 'token', token: TOKEN, authzid: null });
  // y flag, case-insensitive scheme, extra spaces, host/port and unknown keys ignored, padding allowed
  assert.deepEqual(
    parseOAuthBearerInitial(b(`y,,\x01host=db.example.com\x01port=5432\x01auth=bEaReR   abc-._~+/==\x01xtra=1 2\t3\x01\x01`)),
    { kind: 'token', token: 'abc-._~+/==', authzid: null },
  );
  // authzid with RFC 5801 escapes
  assert.deepEqual(parseOAuthBearerInitial(b(`n,a=al=2Cice=3D,\x01auth=Bearer ${TOKEN}\x01\x01`)), { kind: 'token', token: TOKEN, authzid: 'al,ice=' });
  // round trip with the builder
  assert.deepEqual(parseOAuthBearerInitial(oauthBearerInitialResponse(TOKEN, 'bob')), { kind: 'token', token: TOKEN, authzid: 'bob' });
});

test('an empty auth value is a discovery request', () => {
  assert.deepEqual(parseOAuthBearerInitial(b('n,,\x01auth=\x01\x01')), { kind: 'discovery' });
});

test('channel binding is refused', () => {
  throwsWith(() => parseOAuthBearerInitial(b(`p=tls-server-end-point,,\x01auth=Bearer ${TOKEN}\x01\x01`)), '08P01', 'channel binding not supported', /channel binding/);
});

test('malformed messages are protocol violations (08P01)', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    [`x,,\x01auth=Bearer ${TOKEN}\x01\x01`, /channel-binding flag/],
    [`n\x01auth=Bearer ${TOKEN}\x01\x01`, /Comma expected/],
    [`n,z=1,\x01auth=Bearer ${TOKEN}\x01\x01`, /Unexpected attribute/],
    [`n,a=,\x01auth=Bearer ${TOKEN}\x01\x01`, /authorization identity is empty/],
    [`n,a=x=41,\x01auth=Bearer ${TOKEN}\x01\x01`, /invalid escape/],
    [`n,,auth=Bearer ${TOKEN}\x01\x01`, /Key-value separator expected/],
    [`n,,\x01auth=Bearer ${TOKEN}`, /unterminated/],
    [`n,,\x01auth=Bearer ${TOKEN}\x01`, /final terminator/],
    [`n,,\x01\x01`, /does not contain an auth value/],
    [`n,,\x01host=x\x01\x01`, /does not contain an auth value/],
    [`n,,\x01auth=Bearer a\x01auth=Bearer b\x01\x01`, /multiple auth values/],
    [`n,,\x01authBearer\x01\x01`, /key without a value/],
    [`n,,\x01=x\x01\x01`, /empty key name/],
    [`n,,\x01au th=x\x01\x01`, /invalid key name/],
    [`n,,\x01auth=Bearer \x7f\x01\x01`, /invalid value/],
    [`n,,\x01auth=Bearer ${TOKEN}\x01\x01extra`, /additional data/],
    [`n,,\x01auth=Bearer ${TOKEN}\x01\x01\x00`, /length/],
  ];
  for (const [msg, detail] of cases) {
    throwsWith(() => parseOAuthBearerInitial(b(msg)), '08P01', 'malformed oauthbearer message', detail);
  }
  throwsWith(() => parseOAuthBearerInitial(Buffer.alloc(70_000, 0x41)), '08P01', 'malformed oauthbearer message', /too long/);
});

test('malformed bearer credentials are an authentication failure (28000)', () => {
  for (const auth of ['Basic dXNlcjpwdw==', 'Bearer', 'Bearer ', 'Bearer    ', 'Bearer a b', 'Bearer a=b', 'Bearer tok\ten', 'Token abc']) {
    throwsWith(() => parseOAuthBearerInitial(b(`n,,\x01auth=${auth}\x01\x01`)), '28000', 'malformed token');
  }
});

test('failure / discovery challenge JSON', () => {
  const out = oauthBearerFailure('https://issuer.example.com', 'openid orders:read');
  assert.ok(Buffer.isBuffer(out));
  assert.deepEqual(JSON.parse(out.toString('utf8')), {
    status: 'invalid_token',
    'openid-configuration': 'https://issuer.example.com/.well-known/openid-configuration',
    scope: 'openid orders:read',
  });
  assert.equal(out.toString(), '{"status":"invalid_token","openid-configuration":"https://issuer.example.com/.well-known/openid-configuration","scope":"openid orders:read"}');
  // trailing slash, explicit well-known URL, empty scope omitted
  assert.equal(discoveryUrlFor('https://i.example/realms/x/'), 'https://i.example/realms/x/.well-known/openid-configuration');
  assert.equal(discoveryUrlFor('https://i.example/.well-known/oauth-authorization-server'), 'https://i.example/.well-known/oauth-authorization-server');
  assert.deepEqual(JSON.parse(oauthBearerFailure('https://i.example', '').toString()), {
    status: 'invalid_token', 'openid-configuration': 'https://i.example/.well-known/openid-configuration',
  });
  // JSON escaping holds even for odd input
  assert.equal(JSON.parse(oauthBearerFailure('https://i.example/"x', 'a"b').toString()).scope, 'a"b');
});

test("the client's answer to the challenge must be a single \\x01", () => {
  checkOAuthBearerErrorAck(Buffer.from([1]));
  for (const bad of [Buffer.alloc(0), Buffer.from([1, 1]), Buffer.from('x'), Buffer.from([0])]) {
    throwsWith(() => checkOAuthBearerErrorAck(bad), '08P01', 'malformed oauthbearer message', /kvsep/);
  }
});
