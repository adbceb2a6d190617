// SPDX-License-Identifier: MIT
//
// Against a real OAuth2/OIDC server (npm oidc-provider 9, see
// lib/idp_oidc.mjs), through the gateway (issue 4):
//  - jwt mode with OIDC discovery (OIDC_ISSUER, AUTH_AUDIENCE = resource):
//    the server's ES256 and RS256 JWT access tokens are accepted, tampered
//    ones and tokens for another resource are refused;
//  - introspection mode (RFC 7662, client id/secret): an opaque token is
//    accepted, and refused after POST /token/revocation within the cache
//    TTL bound (AUTH_CACHE_TTL=1).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startStack } from './harness.mjs';
import { bearer, pollUntil } from './lib/idp_jwks.mjs';
import { RES_ES256, RES_OPAQUE, RES_RS256, RS, startOidcProvider } from './lib/idp_oidc.mjs';

// How long a revoked token may still pass: the cache TTL (1 s) plus
// generous slack for a loaded 2-core machine.
const REVOKE_BOUND_MS = 1000 + 4000;

function tamper(token, seg) {
	const parts = token.split('.');
	const s = parts[seg];
	const i = Math.floor(s.length / 2);
	parts[seg] = s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
	return (parts.join('.'));
}

function b64json(seg) {
	return (JSON.parse(Buffer.from(seg, 'base64url').toString('utf8')));
}

describe('oidc-provider: jwt mode with discovery', () => {
	let op;
	let es;
	let rs;

	before(async () => {
		op = await startOidcProvider();
		es = await startStack({
			idp: false,
			authEnv: { AUTH_PROVIDER: 'jwt', OIDC_ISSUER: op.issuer, AUTH_AUDIENCE: RES_ES256 },
		});
		rs = await startStack({
			idp: false,
			authEnv: { AUTH_PROVIDER: 'jwt', OIDC_ISSUER: op.issuer, AUTH_AUDIENCE: RES_RS256 },
		});
	});
	after(async () => {
		await es?.stop();
		await rs?.stop();
		await op?.close();
	});

	test('ES256 access token accepted', async () => {
		const t = await op.token(RES_ES256);
		const [h, p] = t.split('.');
		assert.equal(b64json(h).alg, 'ES256');
		assert.equal(b64json(p).aud, RES_ES256);
		const r = await bearer(es, t);
		assert.equal(r.status, 200, r.body);
		assert.ok(op.jwksHits() >= 1, 'keys came from the discovered jwks_uri');
	});

	test('RS256 access token accepted', async () => {
		const t = await op.token(RES_RS256);
		assert.equal(b64json(t.split('.')[0]).alg, 'RS256');
		const r = await bearer(rs, t);
		assert.equal(r.status, 200, r.body);
	});

	test('tampered tokens refused', async () => {
		const t = await op.token(RES_ES256);
		for (const seg of [0, 1, 2]) {
			const r = await bearer(es, tamper(t, seg));
			assert.equal(r.status, 401, `segment ${seg}: ${r.body}`);
			assert.match(r.headers['www-authenticate'] || '', /error="invalid_token"/);
		}
		// payload of another (valid) token under this one's signature
		const other = await op.token(RES_ES256, 'api:read api:write');
		const a = t.split('.');
		const b = other.split('.');
		assert.equal((await bearer(es, `${a[0]}.${b[1]}.${a[2]}`)).status, 401);
		// the untampered token still passes
		assert.equal((await bearer(es, t)).status, 200);
	});

	test('a token for another resource (audience) is refused', async () => {
		assert.equal((await bearer(es, await op.token(RES_RS256))).status, 401);
		assert.equal((await bearer(rs, await op.token(RES_ES256))).status, 401);
	});

	test('an opaque token is not a JWT: refused in jwt mode', async () => {
		assert.equal((await bearer(es, await op.token(RES_OPAQUE))).status, 401);
	});
});

describe('oidc-provider: introspection mode', () => {
	let op;
	let stack;

	before(async () => {
		op = await startOidcProvider();
		stack = await startStack({
			idp: false,
			authEnv: {
				AUTH_PROVIDER: 'introspection',
				AUTH_INTROSPECTION_URL: `${op.issuer}/token/introspection`,
				AUTH_CLIENT_ID: RS.id,
				AUTH_CLIENT_SECRET: RS.secret,
				AUTH_AUDIENCE: RES_OPAQUE,
				AUTH_CACHE_TTL: '1',
			},
		});
	});
	after(async () => {
		await stack?.stop();
		await op?.close();
	});

	test('opaque token accepted, then refused after revocation within the cache TTL bound', async () => {
		const t = await op.token(RES_OPAQUE);
		assert.equal((await op.introspect(t)).active, true);
		assert.equal((await bearer(stack, t)).status, 200);
		assert.equal((await bearer(stack, t)).status, 200); // cached
		await op.revoke(t);
		const revokedAt = Date.now();
		assert.equal((await op.introspect(t)).active, false);
		await pollUntil('the revoked token to be refused', async () => {
			const r = await bearer(stack, t);
			assert.ok(r.status === 200 || r.status === 401, `unexpected ${r.status}: ${r.body}`);
			return (r.status === 401);
		}, REVOKE_BOUND_MS, 100);
		const took = Date.now() - revokedAt;
		assert.ok(took <= REVOKE_BOUND_MS, `refused after ${took} ms`);
		// and it stays refused
		assert.equal((await bearer(stack, t)).status, 401);
	});

	test('garbage and unknown tokens refused', async () => {
		assert.equal((await bearer(stack, 'not-a-real-token')).status, 401);
	});
});
