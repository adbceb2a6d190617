// SPDX-License-Identifier: MIT
//
// jwt mode end to end (issue 4): the refusal matrix, JWKS behaviour (kid
// miss refetch once + cooldown, IdP down / garbage / slow, keep the last
// good keys, key rotation, single-flight) through the real binaries:
//
//   node test --(http)--> gateway --(nng)--> auth-service (AUTH_PROVIDER=jwt)
//                                                 |
//                                                 +--(http)--> JWKS server (this file)
//
// Every token is minted by the npm package `jose`, never by our code, so a
// bug shared by signer and verifier cannot hide. Each request is
// POST /threads/search {}: 200 = accepted, 401 = refused, 503 = keys
// unavailable. The JWKS server counts its hits, so refetch rules are
// asserted exactly.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as jose from 'jose';

import { startStack, waitFor } from './harness.mjs';
import {
	bearer, deadUrl, makeKey, mint, mintHs256, now, pollUntil, searchAs,
	startJwksServer, unsecured,
} from './lib/idp_jwks.mjs';

const ISS = 'https://issuer.e2e.test';
const AUD = 'api://threadgate-e2e';
// The HS256 shared secret of the main stack (>= 32 bytes).
const SECRET = 'e2e-shared-secret-0123456789abcdef-xyz';

function claims(extra = {}) {
	const t = now();
	return { sub: 'user-1', iss: ISS, aud: AUD, iat: t, exp: t + 600, email: 'user-1@example.test', ...extra };
}

function jwtEnv(jwksUrl, extra = {}) {
	return {
		AUTH_PROVIDER: 'jwt',
		AUTH_JWKS_URL: jwksUrl,
		AUTH_ISSUER: ISS,
		AUTH_AUDIENCE: AUD,
		// Every request reaches the verifier (the result cache has its
		// own tests); the single-flight suite turns it back on.
		AUTH_CACHE_TTL: '0',
		...extra,
	};
}

function assert401(r, tokenPresented = true) {
	assert.equal(r.status, 401, `expected 401, got ${r.status}: ${r.body}`);
	const www = r.headers['www-authenticate'] || '';
	assert.match(www, /^Bearer\b/);
	if (tokenPresented) {
		assert.match(www, /error="invalid_token"/);
	}
}

function assert200(r) {
	assert.equal(r.status, 200, `expected 200, got ${r.status}: ${r.body}`);
	assert.ok(Array.isArray(r.json), `expected a JSON array, got ${r.body}`);
}

function assert503(r) {
	assert.equal(r.status, 503, `expected 503, got ${r.status}: ${r.body}`);
	assert.ok(r.headers['retry-after'], 'a 503 carries Retry-After');
}

// Replaces one character in the middle of segment i (0..2) of a JWS.
function tamper(token, seg) {
	const parts = token.split('.');
	const s = parts[seg];
	const i = Math.floor(s.length / 2);
	parts[seg] = s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
	return (parts.join('.'));
}

describe('jwt refusal matrix (ES256 + RS256 JWKS, HS256 secret)', () => {
	let idp;
	let stack;
	let es;
	let rs;
	let stranger;

	before(async () => {
		idp = await startJwksServer();
		es = await makeKey('ES256', 'es-1');
		rs = await makeKey('RS256', 'rs-1');
		stranger = await makeKey('ES256', 'es-unpublished');
		idp.setKeys([es.jwk, rs.jwk]);
		stack = await startStack({ idp: false, authEnv: jwtEnv(idp.url, { AUTH_JWT_SECRET: SECRET }) });
	});
	after(async () => {
		await stack?.stop();
		await idp?.close();
	});

	test('ES256 token accepted', async () => {
		assert200(await bearer(stack, await mint(es, claims())));
	});
	test('RS256 token accepted', async () => {
		assert200(await bearer(stack, await mint(rs, claims())));
	});
	test('HS256 token with the shared secret accepted', async () => {
		assert200(await bearer(stack, await mintHs256(new TextEncoder().encode(SECRET), claims())));
	});
	test('token without kid is tried against the compatible keys', async () => {
		assert200(await bearer(stack, await mint(es, claims(), { kid: undefined })));
	});
	test('scheme is case-insensitive', async () => {
		const t = await mint(es, claims());
		assert200(await searchAs(stack, [`bearer ${t}`]));
	});

	test('no Authorization header -> 401', async () => {
		assert401(await searchAs(stack, []), false);
	});
	test('wrong scheme -> 401', async () => {
		assert401(await searchAs(stack, ['Basic dXNlcjpwYXNzd29yZA==']), false);
		const t = await mint(es, claims());
		assert401(await searchAs(stack, [`Token ${t}`]), false);
	});
	test('empty token -> 401', async () => {
		assert401(await searchAs(stack, ['Bearer']), false);
		assert401(await searchAs(stack, ['Bearer ']), false);
	});
	test('two tokens in one header -> 401', async () => {
		const t = await mint(es, claims());
		assert401(await searchAs(stack, [`Bearer ${t} ${t}`]));
	});
	test('two Authorization headers (both valid) -> 401', async () => {
		const t = await mint(es, claims());
		assert401(await searchAs(stack, [`Bearer ${t}`, `Bearer ${t}`]));
	});
	test('malformed JWT -> 401', async () => {
		for (const bad of ['not-a-jwt', 'a.b', 'a.b.c.d', 'e30.e30.', 'e30..AAAA', '....']) {
			assert401(await bearer(stack, bad));
		}
		const t = await mint(es, claims());
		assert401(await bearer(stack, `${t}=`)); // padding is not base64url
	});
	test('bad signature -> 401', async () => {
		assert401(await bearer(stack, tamper(await mint(es, claims()), 2)));
		assert401(await bearer(stack, tamper(await mint(rs, claims()), 2)));
	});
	test('payload swapped under a valid signature -> 401', async () => {
		const good = (await mint(es, claims())).split('.');
		const other = (await mint(stranger, claims({ sub: 'admin' }))).split('.');
		assert401(await bearer(stack, `${good[0]}.${other[1]}.${good[2]}`));
	});
	test('alg none -> 401', async () => {
		const t = unsecured(claims());
		assert401(await bearer(stack, t));
		// ...also with a kid and a non-empty "signature"
		const [, p] = t.split('.');
		const h = Buffer.from(JSON.stringify({ alg: 'none', kid: 'es-1' })).toString('base64url');
		assert401(await bearer(stack, `${h}.${p}.AAAA`));
	});
	test('alg confusion: HS256 signed with the RSA public key bytes -> 401', async () => {
		const enc = new TextEncoder();
		for (const material of [rs.pem, JSON.stringify(rs.jwk), `${rs.jwk.n}`]) {
			assert401(await bearer(stack, await mintHs256(enc.encode(material), claims(), { kid: 'rs-1' })));
			assert401(await bearer(stack, await mintHs256(enc.encode(material), claims())));
		}
	});
	test('ES256 token presented under the RSA key kid -> 401', async () => {
		assert401(await bearer(stack, await mint(es, claims(), { kid: 'rs-1' })));
	});
	test('HS256 token with a wrong secret -> 401', async () => {
		assert401(await bearer(stack, await mintHs256(new TextEncoder().encode(`${SECRET}-other`), claims())));
	});
	test('crit header -> 401', async () => {
		// jose refuses unknown crit members unless told they are understood
		const t = await new jose.CompactSign(new TextEncoder().encode(JSON.stringify(claims())))
			.setProtectedHeader({ alg: 'ES256', kid: 'es-1', crit: ['x-e2e'], 'x-e2e': 1 })
			.sign(es.privateKey, { crit: { 'x-e2e': true } });
		assert401(await bearer(stack, t));
	});
	test('wrong iss -> 401, missing iss -> 401', async () => {
		assert401(await bearer(stack, await mint(es, claims({ iss: 'https://evil.test' }))));
		assert401(await bearer(stack, await mint(es, claims({ iss: undefined }))));
	});
	test('wrong aud -> 401, aud array containing ours -> 200', async () => {
		assert401(await bearer(stack, await mint(es, claims({ aud: 'api://other' }))));
		assert401(await bearer(stack, await mint(es, claims({ aud: ['a', 'b'] }))));
		assert401(await bearer(stack, await mint(es, claims({ aud: undefined }))));
		assert200(await bearer(stack, await mint(es, claims({ aud: ['api://x', AUD] }))));
	});
	test('expired -> 401; expired within the 30 s leeway -> 200', async () => {
		assert401(await bearer(stack, await mint(es, claims({ iat: now() - 7200, exp: now() - 3600 }))));
		assert401(await bearer(stack, await mint(es, claims({ exp: now() - 45 }))));
		assert200(await bearer(stack, await mint(es, claims({ exp: now() - 10 }))));
	});
	test('missing exp / non-numeric exp -> 401', async () => {
		assert401(await bearer(stack, await mint(es, claims({ exp: undefined }))));
		assert401(await bearer(stack, await mint(es, claims({ exp: String(now() + 600) }))));
	});
	test('nbf beyond leeway -> 401; within leeway -> 200', async () => {
		assert401(await bearer(stack, await mint(es, claims({ nbf: now() + 120 }))));
		assert200(await bearer(stack, await mint(es, claims({ nbf: now() + 10 }))));
	});
	test('iat beyond leeway -> 401; within leeway -> 200', async () => {
		assert401(await bearer(stack, await mint(es, claims({ iat: now() + 120 }))));
		assert200(await bearer(stack, await mint(es, claims({ iat: now() + 10 }))));
	});
	test('missing or empty sub -> 401', async () => {
		assert401(await bearer(stack, await mint(es, claims({ sub: undefined }))));
		assert401(await bearer(stack, await mint(es, claims({ sub: '' }))));
		assert401(await bearer(stack, await mint(es, claims({ sub: 12345 }))));
	});
	test('oversized (but validly signed) token -> 401', async () => {
		const t = await mint(es, claims({ pad: 'x'.repeat(9000) }));
		assert.ok(t.length > 8192);
		assert401(await bearer(stack, t));
		// just under the limit is fine
		const ok = await mint(es, claims({ pad: 'x'.repeat(5000) }));
		assert200(await bearer(stack, ok));
	});
	test('unknown kid: one refetch, then refused; a second unknown kid within the cooldown causes no fetch', async () => {
		// make sure the keys are loaded, then count from here
		assert200(await bearer(stack, await mint(es, claims())));
		const before0 = idp.hits();
		assert401(await bearer(stack, await mint(stranger, claims())));
		assert.equal(idp.hits(), before0 + 1, 'unknown kid refetches the JWKS exactly once');
		assert401(await bearer(stack, await mint(stranger, claims())));
		const other = await makeKey('ES256', 'es-unpublished-2');
		assert401(await bearer(stack, await mint(other, claims())));
		for (let i = 0; i < 10; i++) {
			const k = await makeKey('ES256', `random-${i}`);
			assert401(await bearer(stack, await mint(k, claims())));
		}
		assert.equal(idp.hits(), before0 + 1, 'no refetch within the cooldown');
		// known keys still work
		assert200(await bearer(stack, await mint(rs, claims())));
	});
});

describe('jwt key rotation', () => {
	let idp;
	let stack;

	before(async () => {
		idp = await startJwksServer();
	});
	after(async () => {
		await stack?.stop();
		await idp?.close();
	});

	test('new kid accepted after one refetch; old kid keeps verifying while published', async () => {
		const oldKey = await makeKey('ES256', 'gen-1');
		const newKey = await makeKey('RS256', 'gen-2');
		idp.setKeys([oldKey.jwk]);
		stack = await startStack({ idp: false, authEnv: jwtEnv(idp.url) });
		// The Health check loads the keys once at start (so the service
		// can report ready before its first token); tokens then use them.
		await waitFor('the health check to load the keys', async () => idp.hits() === 1);
		assert200(await bearer(stack, await mint(oldKey, claims())));
		assert.equal(idp.hits(), 1, 'no fetch for the first token');
		// the IdP publishes the next key and starts signing with it
		idp.setKeys([oldKey.jwk, newKey.jwk]);
		assert200(await bearer(stack, await mint(newKey, claims())));
		assert.equal(idp.hits(), 2, 'exactly one refetch for the new kid');
		assert200(await bearer(stack, await mint(oldKey, claims())));
		assert200(await bearer(stack, await mint(newKey, claims({ sub: 'user-2' }))));
		assert.equal(idp.hits(), 2);
	});
});

describe('jwt IdP failures', () => {
	const cleanup = [];
	after(async () => {
		for (const f of cleanup.reverse()) {
			await f();
		}
	});

	test('JWKS server down from the start -> 503 (not 401, not 200)', async () => {
		const key = await makeKey('ES256', 'k');
		const stack = await startStack({ idp: false, authEnv: jwtEnv(await deadUrl()) });
		cleanup.push(() => stack.stop());
		const r = await bearer(stack, await mint(key, claims()));
		assert503(r);
		assert503(await bearer(stack, await mint(key, claims({ sub: 'user-2' }))));
		// a malformed token is still a 401: no keys are needed to refuse it
		assert401(await bearer(stack, 'not-a-jwt'));
	});

	test('JWKS answers garbage -> 503; recovers once it answers keys', async () => {
		const idp = await startJwksServer();
		cleanup.push(() => idp.close());
		const key = await makeKey('ES256', 'k');
		idp.setKeys([key.jwk]);
		idp.setMode('garbage');
		const stack = await startStack({ idp: false, authEnv: jwtEnv(idp.url) });
		cleanup.push(() => stack.stop());
		assert503(await bearer(stack, await mint(key, claims())));
		assert.equal(idp.hits(), 1);
		idp.setMode('ok');
		await pollUntil('the service to load the keys after the IdP recovers', async () =>
			(await bearer(stack, await mint(key, claims()))).status === 200);
		assert.equal(idp.hits(), 2, 'failed fetches are retried after a backoff, not per request');
	});

	test('JWKS answers 500 -> 503', async () => {
		const idp = await startJwksServer();
		cleanup.push(() => idp.close());
		const key = await makeKey('RS256', 'k');
		idp.setKeys([key.jwk]);
		idp.setMode('500');
		const stack = await startStack({ idp: false, authEnv: jwtEnv(idp.url) });
		cleanup.push(() => stack.stop());
		assert503(await bearer(stack, await mint(key, claims())));
	});

	test('JWKS slow (answers after the deadline) -> 503', async () => {
		const idp = await startJwksServer();
		cleanup.push(() => idp.close());
		const key = await makeKey('ES256', 'k');
		idp.setKeys([key.jwk]);
		idp.setMode('hang');
		const stack = await startStack({ idp: false, authEnv: jwtEnv(idp.url, { AUTH_IDP_TIMEOUT_MS: '300' }) });
		cleanup.push(() => stack.stop());
		const t0 = Date.now();
		assert503(await bearer(stack, await mint(key, claims())));
		assert.ok(Date.now() - t0 < 3000, 'the IdP timeout bounds the wait');
	});

	test('after AUTH_JWKS_MAX_AGE a failed refresh keeps the last good keys', async () => {
		const idp = await startJwksServer();
		cleanup.push(() => idp.close());
		const key = await makeKey('ES256', 'k');
		idp.setKeys([key.jwk]);
		idp.setMaxAge(3600); // capped by AUTH_JWKS_MAX_AGE=1
		const stack = await startStack({ idp: false, authEnv: jwtEnv(idp.url, { AUTH_JWKS_MAX_AGE: '1' }) });
		cleanup.push(() => stack.stop());
		assert200(await bearer(stack, await mint(key, claims())));
		assert.equal(idp.hits(), 1);
		idp.setMode('garbage');
		// after max-age the next request refreshes; the refresh fails and
		// the request is still answered with the last good keys
		await pollUntil('a refresh after max-age', async () => {
			assert200(await bearer(stack, await mint(key, claims())));
			return (idp.hits() >= 2);
		});
		idp.setMode('500');
		await pollUntil('a second refresh attempt', async () => {
			assert200(await bearer(stack, await mint(key, claims())));
			return (idp.hits() >= 3);
		});
		// the IdP withdraws the key: refused after the next refresh
		idp.setMode('ok');
		idp.setKeys([]);
		// failed refreshes back off (2 s, then 4 s, ...): allow for that
		await pollUntil('the withdrawn key to be refused', async () =>
			(await bearer(stack, await mint(key, claims()))).status === 401, 20000);
	});

	test('the JWKS Cache-Control max-age is honoured (below the cap)', async () => {
		const idp = await startJwksServer();
		cleanup.push(() => idp.close());
		const key = await makeKey('ES256', 'k');
		idp.setKeys([key.jwk]);
		idp.setMaxAge(1); // AUTH_JWKS_MAX_AGE stays at its default (600)
		const stack = await startStack({ idp: false, authEnv: jwtEnv(idp.url) });
		cleanup.push(() => stack.stop());
		assert200(await bearer(stack, await mint(key, claims())));
		assert.equal(idp.hits(), 1);
		await pollUntil('a refresh after the 1 s max-age', async () => {
			assert200(await bearer(stack, await mint(key, claims())));
			return (idp.hits() >= 2);
		}, 6000);
		// Cache-Control: max-age=600 means no refetch for a while
		idp.setMaxAge(600);
		await pollUntil('the refresh that reads max-age=600', async () => {
			assert200(await bearer(stack, await mint(key, claims())));
			return (idp.hits() >= 3);
		}, 6000);
		const h = idp.hits();
		for (let i = 0; i < 5; i++) {
			assert200(await bearer(stack, await mint(key, claims())));
		}
		assert.equal(idp.hits(), h);
	});
});

describe('jwt single-flight', () => {
	let idp;
	let stack;

	before(async () => {
		idp = await startJwksServer();
	});
	after(async () => {
		await stack?.stop();
		await idp?.close();
	});

	test('50 concurrent requests with one new token -> one JWKS fetch', async () => {
		const key = await makeKey('ES256', 'sf-1');
		idp.setKeys([key.jwk]);
		stack = await startStack({ idp: false, authEnv: jwtEnv(idp.url, { AUTH_CACHE_TTL: '60' }) });
		const t = await mint(key, claims());
		const rs = await Promise.all(Array.from({ length: 50 }, () => bearer(stack, t)));
		for (const r of rs) {
			assert200(r);
		}
		assert.equal(idp.hits(), 1);
	});

	test('50 concurrent distinct tokens with a new kid -> one JWKS refetch', async () => {
		const key = await makeKey('ES256', 'sf-1');
		const next = await makeKey('ES256', 'sf-2');
		idp.setKeys([key.jwk, next.jwk]);
		const before0 = idp.hits();
		const tokens = await Promise.all(Array.from({ length: 50 }, (_, i) => mint(next, claims({ sub: `u-${i}` }))));
		const rs = await Promise.all(tokens.map((t) => bearer(stack, t)));
		for (const r of rs) {
			assert200(r);
		}
		assert.equal(idp.hits(), before0 + 1);
	});
});

describe('jwt mode against the dev IdP (Supabase defaults)', () => {
	let stack;

	before(async () => {
		// SUPABASE_URL (set by the harness) gives the JWKS URL
		// ($SUPABASE_URL/auth/v1/.well-known/jwks.json), iss
		// ($SUPABASE_URL/auth/v1) and aud (authenticated).
		stack = await startStack({ authEnv: { AUTH_PROVIDER: 'jwt' } });
	});
	after(async () => {
		await stack?.stop();
	});

	test('a Supabase-shaped ES256 session token is accepted locally; tampered is refused', async () => {
		const s = await stack.signup('jwt-matrix@example.test', 'password-123');
		const hdr = JSON.parse(Buffer.from(s.access_token.split('.')[0], 'base64url').toString());
		assert.equal(hdr.alg, 'ES256');
		assert200(await bearer(stack, s.access_token));
		assert401(await bearer(stack, tamper(s.access_token, 2)));
		assert401(await bearer(stack, tamper(s.access_token, 1)));
		assert.match(stack.logs('auth'), /jwt: loaded 1 signing key/);
	});
});
