// SPDX-License-Identifier: MIT
//
// The gateway's identity cache (GATEWAY_AUTH_CACHE_TTL) against the real
// stack: the dev IdP, the auth-service in Supabase mode with a short result
// cache (AUTH_CACHE_TTL=2), and a gateway allowed to keep identities far
// longer (30 s). The auth-service's Identity.reuse_ms is the bound:
//  - repeated requests with one token are answered from the gateway's
//    cache: the auth-service's Authenticate count stays (almost) flat while
//    the gateway's hit counter grows;
//  - a sign-out at the IdP takes effect within the auth-service's cache TTL
//    (2 s, plus slack for a loaded machine), not the gateway's 30 s;
//  - a token never seen is not served from the cache: garbage is 401.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { httpJson, metricSum, metricsEnv, readPortFile, startStack, tmpDir } from './harness.mjs';

const AUTH_CACHE_TTL_S = 2;
// Slack over the auth-service's TTL for a sign-out to show: polling, a
// loaded machine, sanitizer builds.
const SIGNOUT_SLACK_MS = 1500;
// Requests of the burst.
const BURST = 20;

describe('gateway identity cache: bounded by the auth-service', () => {
	let stack;
	let dir;
	const mport = {};
	let token;

	const authCalls = () => metricSum(mport.auth, 'threadgate_rpc_server_requests_total',
		'method="Authenticate"');
	const hits = () => metricSum(mport.gateway, 'threadgate_gateway_auth_cache_hits_total');
	const misses = () => metricSum(mport.gateway, 'threadgate_gateway_auth_cache_misses_total');
	const count = (tok) => httpJson('POST', `${stack.gatewayUrl}/threads/count`, {
		headers: { authorization: `Bearer ${tok}` }, body: {},
	});

	before(async () => {
		dir = await tmpDir('tg-gwcache-');
		stack = await startStack({
			authEnv: { ...metricsEnv(dir, 'auth'), AUTH_CACHE_TTL: String(AUTH_CACHE_TTL_S) },
			gatewayEnv: { ...metricsEnv(dir, 'gateway'), GATEWAY_AUTH_CACHE_TTL: '30' },
		});
		for (const name of ['gateway', 'auth']) {
			mport[name] = await readPortFile(path.join(dir, `${name}.mport`));
		}
		token = (await stack.signup('gwcache@example.com', 'correct-horse-battery')).access_token;
	});

	after(async () => {
		await stack?.stop();
		await fsp.rm(dir, { recursive: true, force: true });
	});

	test('repeated requests with one token skip the Authenticate rpc', async () => {
		assert.equal((await count(token)).status, 200);
		const a0 = await authCalls();
		const h0 = await hits();
		const m0 = await misses();
		const t0 = Date.now();
		for (let i = 0; i < BURST; i++) {
			const r = await count(token);
			assert.equal(r.status, 200, r.text);
		}
		const elapsed = Date.now() - t0;
		const asked = (await authCalls()) - a0;
		const hit = (await hits()) - h0;
		// Each gateway entry lives at most what is left of the auth-service's
		// entry; a new one starts at most every TTL, so at most two asks per
		// TTL window (one may land just before that entry ends).
		const bound = 2 * Math.ceil(elapsed / (AUTH_CACHE_TTL_S * 1000)) + 1;
		assert.ok(asked <= bound, `${asked} Authenticate calls for ${BURST} requests in ${elapsed} ms (bound ${bound})`);
		assert.equal(hit + ((await misses()) - m0), BURST, 'every request looked up once');
		assert.ok(hit >= BURST - asked, `${hit} cache hits, ${asked} asks`);
	});

	test('a credential the gateway never saw is asked about: garbage is 401', async () => {
		const m0 = await misses();
		const r = await count(`${token}x`);
		assert.equal(r.status, 401, r.text);
		assert.equal((await count(`${token}x`)).status, 401, 'a refusal is not cached');
		assert.equal((await misses()) - m0, 2);
	});

	test('a sign-out takes effect within the auth-service TTL, not the gateway TTL', async () => {
		// Served from the gateway's cache right before the sign-out (an
		// entry may end between two requests: a few tries).
		let served = false;
		for (let i = 0; i < 3 && !served; i++) {
			const h0 = await hits();
			assert.equal((await count(token)).status, 200);
			served = (await hits()) > h0;
		}
		assert.ok(served, 'served from the gateway cache before the sign-out');
		const out = await fetch(`${stack.idpUrl}/auth/v1/logout`, {
			method: 'POST',
			headers: { authorization: `Bearer ${token}`, apikey: stack.anonKey },
			signal: AbortSignal.timeout(10000),
		});
		assert.equal(out.status, 204);
		const at = Date.now();
		const bound = AUTH_CACHE_TTL_S * 1000 + SIGNOUT_SLACK_MS;
		let status = 200;
		while (status === 200 && Date.now() - at <= bound) {
			status = (await count(token)).status;
			assert.ok(status === 200 || status === 401, `unexpected ${status}`);
		}
		const took = Date.now() - at;
		assert.equal(status, 401, `still accepted ${took} ms after the sign-out`);
		assert.ok(took <= bound, `refused after ${took} ms (bound ${bound} ms)`);
		assert.equal((await count(token)).status, 401, 'stays refused');
	});
});
