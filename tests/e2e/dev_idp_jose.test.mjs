// SPDX-License-Identifier: MIT
//
// Independent check of the dev IdP's tokens: a token issued by the C dev
// IdP (cjose, ES256) must verify with the npm `jose` package against the
// IdP's published JWKS, with issuer and audience enforced, exactly as a
// third-party resource server would do it; and jose must refuse a token
// whose payload was altered, and one checked against the wrong issuer.
// Starts only the dev IdP (port 0, database in a temp dir).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';

import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

import { httpJson, removeTmpDir, startProcess, tmpDir } from './harness.mjs';

const ANON = 'jose-test-anon-key';
const SERVICE = 'jose-test-service-key';

let dir;
let idp;
let base;

before(async () => {
	dir = await tmpDir('tg-dev-idp-jose-');
	const portFile = path.join(dir, 'idp.port');
	idp = await startProcess('dev-idp', {
		args: ['--port', '0', '--port-file', portFile, '--db', path.join(dir, 'idp.db')],
		env: { DEV_IDP_ANON_KEY: ANON, DEV_IDP_SERVICE_KEY: SERVICE },
		portFile,
		logFile: path.join(dir, 'idp.log'),
	});
	base = `http://127.0.0.1:${idp.port}/auth/v1`;
});

after(async () => {
	if (idp) {
		await idp.stop();
	}
	if (dir) {
		await removeTmpDir(dir);
	}
});

async function signup(email) {
	const r = await httpJson('POST', `${base}/signup`, {
		headers: { apikey: ANON },
		body: { email, password: 'jose-pass-1', data: { team: 'jose' } },
	});
	assert.equal(r.status, 200, r.text);
	return (r.json);
}

test('a dev IdP token verifies with jose against the published JWKS', async () => {
	const disco = await httpJson('GET', `${base}/.well-known/openid-configuration`);
	assert.equal(disco.status, 200);
	const issuer = disco.json.issuer;
	assert.equal(issuer, base);
	assert.equal(disco.json.jwks_uri, `${base}/.well-known/jwks.json`);

	const s = await signup('jose-user@example.com');
	const jwks = createRemoteJWKSet(new URL(disco.json.jwks_uri));
	const { payload, protectedHeader } = await jwtVerify(s.access_token, jwks, {
		issuer,
		audience: 'authenticated',
		algorithms: ['ES256'],
	});
	assert.equal(protectedHeader.alg, 'ES256');
	assert.equal(protectedHeader.typ, 'JWT');
	assert.equal(typeof protectedHeader.kid, 'string');
	assert.equal(payload.sub, s.user.id);
	assert.equal(payload.email, 'jose-user@example.com');
	assert.equal(payload.role, 'authenticated');
	assert.equal(payload.aal, 'aal1');
	assert.equal(payload.is_anonymous, false);
	assert.match(payload.session_id, /^[0-9a-f-]{36}$/);
	assert.equal(payload.exp - payload.iat, 3600);
	assert.equal(payload.exp, s.expires_at);
	assert.deepEqual(payload.user_metadata, { team: 'jose' });
	assert.deepEqual(payload.app_metadata, { provider: 'email', providers: ['email'] });

	// The JWKS carries exactly the public key the token names.
	const keys = await httpJson('GET', `${base}/.well-known/jwks.json`);
	assert.equal(keys.json.keys.length, 1);
	assert.equal(keys.json.keys[0].kid, decodeProtectedHeader(s.access_token).kid);
	assert.equal(keys.json.keys[0].d, undefined);
});

test('jose refuses an altered payload and a wrong issuer', async () => {
	const s = await signup('jose-evil@example.com');
	const jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`));
	const [h, p, sig] = s.access_token.split('.');
	const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
	claims.role = 'service_role';
	const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${sig}`;
	await assert.rejects(jwtVerify(forged, jwks, { issuer: base, audience: 'authenticated' }),
		(e) => e.code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED');
	await assert.rejects(jwtVerify(s.access_token, jwks, { issuer: 'http://elsewhere/auth/v1', audience: 'authenticated' }),
		(e) => e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED');
	// And the IdP itself agrees about the forgery.
	const r = await httpJson('GET', `${base}/user`, {
		headers: { apikey: ANON, authorization: `Bearer ${forged}` },
	});
	assert.equal(r.status, 403);
	assert.equal(r.json.error_code, 'bad_jwt');
});
