// SPDX-License-Identifier: MIT
//
// The issue-2 client flow (the LangGraph auth tutorial's test, part 3/3)
// with the official JS SDK against a real stack: dev IdP + auth-service +
// thread-service + gateway, all on loopback with free ports (harness.mjs).
// Two users sign up at the dev IdP; user 1 owns a thread; user 2 can never
// see, change, count or delete it; tokens that are missing, garbage or
// expired get 401; reused thread ids get 409; GET /ok needs no token.
//
// The expired-token case runs against its own stack whose dev IdP mints
// tokens with DEV_IDP_JWT_EXP=3: the token is used once while valid (200),
// then the test polls the wall clock until the token's own `exp` has
// passed and expects 401. This is a real expiry, checked by the real IdP
// (and it also proves the auth-service cache does not outlive `exp`);
// minting a token with jose under a key we control would only test "bad
// signature", which the garbage-token case already covers.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Client } from '@langchain/langgraph-sdk';
import { startStack, httpJson } from './harness.mjs';

const PASSWORD = 'seed-flow-password-1';
// Lifetime of the tokens of the expiry stack, in seconds: long enough to
// use the token once on a loaded machine, short enough to wait out.
const SHORT_EXP_S = 3;
// Bound on waiting for that expiry (exp is in whole seconds).
const EXPIRY_WAIT_MS = (SHORT_EXP_S + 3) * 1000;

function sdk(url, token) {
	const headers = token === null ? {} : { Authorization: `Bearer ${token}` };
	return (new Client({ apiUrl: url, apiKey: null, defaultHeaders: headers }));
}

function email(label) {
	return (`${label}-${randomUUID().slice(0, 8)}@example.com`);
}

function jwtClaims(token) {
	const part = token.split('.')[1];
	return (JSON.parse(Buffer.from(part, 'base64url').toString('utf8')));
}

// expectStatus(promise, status): the SDK call fails with HTTPError(status).
async function expectStatus(promise, status) {
	await assert.rejects(promise, (err) => {
		assert.equal(err?.constructor?.name, 'HTTPError', `expected an SDK HTTPError, got ${err}`);
		assert.equal(err.status, status, `expected HTTP ${status}, got ${err.message}`);
		return (true);
	});
}

// A 401 as issue 2 specifies it: WWW-Authenticate: Bearer..., {"detail": "..."}.
function assert401(r, what) {
	assert.equal(r.status, 401, `${what}: status ${r.status} ${r.text}`);
	const wa = r.headers.get('www-authenticate') ?? '';
	assert.match(wa, /^Bearer\b/i, `${what}: WWW-Authenticate is '${wa}'`);
	assert.ok(r.json && typeof r.json.detail === 'string' && r.json.detail.length > 0,
		`${what}: body is not {"detail": "..."}: ${r.text}`);
}

describe('seed flow (issue 2) with the official JS SDK', () => {
	let stack;
	let u1;
	let u2;
	let c1;
	let c2;
	let t1; // user 1's thread

	before(async () => {
		stack = await startStack();
		const s1 = await stack.signup(email('user1'), PASSWORD);
		const s2 = await stack.signup(email('user2'), PASSWORD);
		// Log in as well, as the tutorial does: the password grant must
		// give a working token for the same user.
		const l1 = await stack.login(s1.user.email, PASSWORD);
		assert.equal(l1.user.id, s1.user.id);
		u1 = { id: s1.user.id, token: l1.access_token };
		u2 = { id: s2.user.id, token: s2.access_token };
		assert.notEqual(u1.id, u2.id);
		c1 = sdk(stack.gatewayUrl, u1.token);
		c2 = sdk(stack.gatewayUrl, u2.token);
	});

	after(async () => {
		if (stack) {
			await stack.stop();
		}
	});

	test('GET /ok answers {"ok": true} without a token', async () => {
		const r = await httpJson('GET', `${stack.gatewayUrl}/ok`);
		assert.equal(r.status, 200);
		assert.deepEqual(r.json, { ok: true });
	});

	test('user 1 creates a thread owned by user 1', async () => {
		t1 = await c1.threads.create({ metadata: { topic: 'seed', n: 1 } });
		assert.match(t1.thread_id, /^[0-9a-f-]{36}$/);
		assert.equal(t1.metadata.owner, u1.id);
		assert.equal(t1.metadata.topic, 'seed');
		assert.equal(t1.status, 'idle');
		assert.ok(t1.created_at && t1.updated_at);
	});

	test('no token: 401 with WWW-Authenticate: Bearer and {"detail"}', async () => {
		await expectStatus(sdk(stack.gatewayUrl, null).threads.create(), 401);
		assert401(await httpJson('POST', `${stack.gatewayUrl}/threads`, { body: {} }), 'create without token');
		assert401(await httpJson('GET', `${stack.gatewayUrl}/threads/${t1.thread_id}`), 'get without token');
		assert401(await httpJson('POST', `${stack.gatewayUrl}/threads/search`, { body: {} }), 'search without token');
	});

	test('garbage tokens: 401', async () => {
		await expectStatus(sdk(stack.gatewayUrl, 'garbage').threads.get(t1.thread_id), 401);
		// A well-formed JWT whose signature is wrong (user 1's token with
		// the last signature characters changed).
		const sig = u1.token.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA';
		const forged = u1.token.slice(0, -4) + sig;
		await expectStatus(sdk(stack.gatewayUrl, forged).threads.search(), 401);
		for (const h of ['Bearer', 'Basic dXNlcjpwdw==', `Bearer ${u1.token} extra`, 'Bearer a b']) {
			const r = await httpJson('POST', `${stack.gatewayUrl}/threads/count`,
				{ headers: { authorization: h }, body: {} });
			assert401(r, `Authorization: ${h.slice(0, 20)}...`);
		}
	});

	test('user 2 gets 404 for user 1\'s thread on get, update and delete', async () => {
		await expectStatus(c2.threads.get(t1.thread_id), 404);
		await expectStatus(c2.threads.update(t1.thread_id, { metadata: { hijacked: true } }), 404);
		await expectStatus(c2.threads.delete(t1.thread_id), 404);
		// ...and nothing changed for user 1.
		const again = await c1.threads.get(t1.thread_id);
		assert.equal(again.metadata.owner, u1.id);
		assert.equal(again.metadata.hijacked, undefined);
		// Same answer as for a thread that does not exist at all.
		await expectStatus(c2.threads.get(randomUUID()), 404);
	});

	test('user 2 search and count never include user 1\'s thread', async () => {
		const mine = await c2.threads.create({ metadata: { topic: 'seed' } });
		assert.equal(mine.metadata.owner, u2.id);
		const all = await c2.threads.search({ limit: 1000 });
		assert.deepEqual(all.map((t) => t.thread_id), [mine.thread_id]);
		const byTopic = await c2.threads.search({ metadata: { topic: 'seed' } });
		assert.deepEqual(byTopic.map((t) => t.thread_id), [mine.thread_id]);
		// A metadata.owner filter cannot widen the caller's scope.
		const spoof = await c2.threads.search({ metadata: { owner: u1.id } });
		assert.deepEqual(spoof, []);
		const byId = await c2.threads.search({ ids: [t1.thread_id] });
		assert.deepEqual(byId, []);
		assert.equal(await c2.threads.count(), 1);
		assert.equal(await c2.threads.count({ metadata: { owner: u1.id } }), 0);
	});

	test('user 1 gets, updates (shallow merge), searches and counts own threads', async () => {
		const got = await c1.threads.get(t1.thread_id);
		assert.equal(got.thread_id, t1.thread_id);
		assert.deepEqual(got.metadata, { topic: 'seed', n: 1, owner: u1.id });

		const upd = await c1.threads.update(t1.thread_id, { metadata: { n: 2, extra: { a: 1 } } });
		assert.deepEqual(upd.metadata, { topic: 'seed', n: 2, extra: { a: 1 }, owner: u1.id });
		assert.ok(Date.parse(upd.updated_at) >= Date.parse(got.updated_at));
		// Shallow: a nested object is replaced, not merged.
		const upd2 = await c1.threads.update(t1.thread_id, { metadata: { extra: { b: 2 } } });
		assert.deepEqual(upd2.metadata.extra, { b: 2 });

		const t1b = await c1.threads.create({ metadata: { topic: 'other' } });
		const found = await c1.threads.search({ metadata: { topic: 'seed' } });
		assert.deepEqual(found.map((t) => t.thread_id), [t1.thread_id]);
		const all = await c1.threads.search();
		assert.deepEqual(new Set(all.map((t) => t.thread_id)), new Set([t1.thread_id, t1b.thread_id]));
		assert.ok(all.every((t) => t.metadata.owner === u1.id));
		assert.equal(await c1.threads.count(), 2);
		assert.equal(await c1.threads.count({ metadata: { topic: 'other' } }), 1);
	});

	test('owner cannot be changed or removed by an update', async () => {
		for (const metadata of [{ owner: u2.id }, { owner: null }, { owner: '' }]) {
			try {
				const r = await c1.threads.update(t1.thread_id, { metadata });
				assert.equal(r.metadata.owner, u1.id, `update ${JSON.stringify(metadata)} answered owner ${r.metadata.owner}`);
			} catch (err) {
				// Refusing the change is fine too, but only as a client error.
				assert.ok(err.status >= 400 && err.status < 500, `update ${JSON.stringify(metadata)}: ${err.message}`);
			}
			const now = await c1.threads.get(t1.thread_id);
			assert.equal(now.metadata.owner, u1.id);
		}
		// user 2 still cannot see it: the owner really did not move.
		await expectStatus(c2.threads.get(t1.thread_id), 404);
	});

	test('create with a thread id already used by anyone: 409', async () => {
		await expectStatus(c1.threads.create({ threadId: t1.thread_id }), 409);
		await expectStatus(c2.threads.create({ threadId: t1.thread_id }), 409);
		// The original is untouched.
		const still = await c1.threads.get(t1.thread_id);
		assert.equal(still.metadata.owner, u1.id);
		// A fresh explicit id works and is kept.
		const id = randomUUID();
		const t = await c2.threads.create({ threadId: id });
		assert.equal(t.thread_id, id);
		assert.equal(t.metadata.owner, u2.id);
	});

	test('user 1 deletes own threads; then they are gone', async () => {
		const before = await c1.threads.count();
		const r = await httpJson('DELETE', `${stack.gatewayUrl}/threads/${t1.thread_id}`,
			{ headers: { authorization: `Bearer ${u1.token}` } });
		assert.equal(r.status, 204);
		assert.equal(r.text, '');
		await expectStatus(c1.threads.get(t1.thread_id), 404);
		await expectStatus(c1.threads.delete(t1.thread_id), 404);
		assert.equal(await c1.threads.count(), before - 1);
		// The SDK's delete resolves on 204.
		for (const t of await c1.threads.search()) {
			await c1.threads.delete(t.thread_id);
		}
		assert.equal(await c1.threads.count(), 0);
		assert.equal(await c2.threads.count(), 2);
	});
});

describe('expired tokens', () => {
	let stack;

	before(async () => {
		stack = await startStack({ idpEnv: { DEV_IDP_JWT_EXP: String(SHORT_EXP_S) } });
	});

	after(async () => {
		if (stack) {
			await stack.stop();
		}
	});

	test('a token past its exp gets 401 (also after a cached success)', async () => {
		const s = await stack.signup(email('expiring'), PASSWORD);
		const { exp, iat } = jwtClaims(s.access_token);
		assert.ok(exp - iat <= SHORT_EXP_S, `dev IdP ignored DEV_IDP_JWT_EXP: exp-iat=${exp - iat}`);
		const c = sdk(stack.gatewayUrl, s.access_token);
		// Valid now: this also puts it in the auth-service cache.
		const t = await c.threads.create();
		assert.equal(t.metadata.owner, s.user.id);
		// Wait (bounded) until the wall clock has passed exp, then a bit
		// more than a second so whole-second comparisons agree.
		const deadline = Date.now() + EXPIRY_WAIT_MS;
		while (Date.now() / 1000 < exp + 1.1) {
			assert.ok(Date.now() < deadline, 'clock did not pass exp in time');
			await new Promise((r) => setTimeout(r, 100));
		}
		await expectStatus(c.threads.get(t.thread_id), 401);
		const r = await httpJson('GET', `${stack.gatewayUrl}/threads/${t.thread_id}`,
			{ headers: { authorization: `Bearer ${s.access_token}` } });
		assert401(r, 'expired token');
		// A fresh login works again. Its token lives SHORT_EXP_S too, and
		// a slow machine (sanitizer builds, a loaded CI box) can spend most
		// of that issuing it: when the 401 came after the fresh token's own
		// exp, log in again (bounded); a 401 for a live token fails.
		for (let attempt = 1; ; attempt++) {
			const l = await stack.login(s.user.email, PASSWORD);
			const fresh = jwtClaims(l.access_token);
			const r2 = await httpJson('GET', `${stack.gatewayUrl}/threads/${t.thread_id}`,
				{ headers: { authorization: `Bearer ${l.access_token}` } });
			if (r2.status === 401 && Date.now() / 1000 >= fresh.exp - 1 && attempt < 3) {
				continue;
			}
			assert.equal(r2.status, 200, `fresh login: ${r2.status} ${JSON.stringify(r2.json)}`);
			assert.equal(r2.json.thread_id, t.thread_id);
			break;
		}
	});
});
