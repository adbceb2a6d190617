// SPDX-License-Identifier: MIT
//
// Issue 3 end to end: every threads method of the official JS SDK
// (@langchain/langgraph-sdk 1.15.0, unchanged, one client per user) against
// the real stack (dev IdP, auth-service, thread-service, gateway) started by
// ../harness.mjs. Each method is checked for its own behaviour (the contract
// is ../../../shared/reference/langgraph-threads-api.md) and for the
// cross-user case: user 2 acting on user 1's thread gets 404 (409 for create
// and copy), search/count never show it, prune does not touch it, and user
// 1's data is unchanged afterwards. Raw fetch is used only where the SDK
// hides what must be checked (status codes, headers, empty bodies).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startStack } from './harness.mjs';
import {
	UUID_RE, UUID7_RE, assertIso, assertThreadShape, clockPast, expectHttpError,
	ids, isoMicros, newUser, raw, snapshot, sorted,
} from './lib/threads_util.mjs';

let stack;
// u1 owns most threads; u2 is the intruder (and owns a few of its own).
let u1;
let u2;

before(async () => {
	stack = await startStack();
	u1 = await newUser(stack, 'threads-u1');
	u2 = await newUser(stack, 'threads-u2');
	assert.notEqual(u1.id, u2.id);
});

after(async () => {
	if (stack) {
		await stack.stop();
	}
});

// A tag that keeps one test's threads apart from every other test's.
function group(name) {
	return (`${name}-${randomUUID().slice(0, 8)}`);
}

// The fields create, get, update and copy must agree on.
function core(t) {
	return ({
		thread_id: t.thread_id,
		metadata: t.metadata,
		status: t.status,
		created_at: t.created_at,
		config: t.config,
	});
}

// A thread of user `u` with `updates` state updates applied in order;
// returns { thread_id, checkpoints: [update_state replies' checkpoint] }.
async function threadWithHistory(u, metadata, updates) {
	const t = await u.client.threads.create({ metadata });
	const checkpoints = [];
	for (const [i, values] of updates.entries()) {
		const r = await u.client.threads.updateState(t.thread_id, { values, asNode: `node${i}` });
		checkpoints.push(r.checkpoint);
	}
	return ({ thread_id: t.thread_id, checkpoints });
}

// ---------------------------------------------------------------------
// Meta: /info, CORS, x-request-id, content types, unknown keys
// ---------------------------------------------------------------------

describe('meta and wire conventions', () => {
	test('GET /info answers without a token and carries a version', async () => {
		const r = await raw(stack, 'GET', '/info');
		assert.equal(r.status, 200, r.text);
		assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
		assert.equal(typeof r.json?.version, 'string', r.text);
		assert.ok(r.json.version.length > 0);
	});

	test('CORS: preflight answered without a token; pagination headers exposed', async () => {
		const origin = 'http://app.example.test';
		const pre = await raw(stack, 'OPTIONS', '/threads/search', {
			headers: {
				Origin: origin,
				'Access-Control-Request-Method': 'POST',
				'Access-Control-Request-Headers': 'authorization,content-type',
			},
		});
		assert.ok(pre.status === 200 || pre.status === 204, `preflight status ${pre.status}: ${pre.text}`);
		const acao = pre.headers.get('access-control-allow-origin');
		assert.ok(acao === '*' || acao === origin, `Access-Control-Allow-Origin: ${acao}`);
		const acam = (pre.headers.get('access-control-allow-methods') ?? '').toUpperCase();
		assert.ok(acam === '*' || /\bPOST\b/.test(acam), `Access-Control-Allow-Methods: ${acam}`);
		const acah = (pre.headers.get('access-control-allow-headers') ?? '').toLowerCase();
		assert.ok(acah === '*' || (/\bauthorization\b/.test(acah) && /\bcontent-type\b/.test(acah)),
			`Access-Control-Allow-Headers: ${acah}`);

		// The actual request: CORS headers and the exposed pagination headers.
		const r = await raw(stack, 'POST', '/threads/search', {
			token: u1.token, headers: { Origin: origin }, body: { limit: 1 },
		});
		assert.equal(r.status, 200, r.text);
		const acao2 = r.headers.get('access-control-allow-origin');
		assert.ok(acao2 === '*' || acao2 === origin, `Access-Control-Allow-Origin: ${acao2}`);
		const expose = (r.headers.get('access-control-expose-headers') ?? '').toLowerCase();
		assert.match(expose, /\bx-pagination-total\b/, `Access-Control-Expose-Headers: ${expose}`);
		assert.match(expose, /\bx-pagination-next\b/, `Access-Control-Expose-Headers: ${expose}`);

		// Errors carry CORS headers too, so a browser client can read them.
		const denied = await raw(stack, 'GET', `/threads/${randomUUID()}`, { headers: { Origin: origin } });
		assert.equal(denied.status, 401, denied.text);
		const acao3 = denied.headers.get('access-control-allow-origin');
		assert.ok(acao3 === '*' || acao3 === origin, `401: Access-Control-Allow-Origin: ${acao3}`);
	});

	test('x-request-id on every response (2xx, 204, 4xx, preflight, unauthenticated)', async () => {
		const t = await u1.client.threads.create();
		const responses = [
			['GET /info', await raw(stack, 'GET', '/info')],
			['GET /ok', await raw(stack, 'GET', '/ok')],
			['OPTIONS', await raw(stack, 'OPTIONS', '/threads', {
				headers: { Origin: 'http://x.test', 'Access-Control-Request-Method': 'POST' },
			})],
			['POST /threads', await raw(stack, 'POST', '/threads', { token: u1.token, body: {} })],
			['GET own', await raw(stack, 'GET', `/threads/${t.thread_id}`, { token: u1.token })],
			['POST search', await raw(stack, 'POST', '/threads/search', { token: u1.token, body: {} })],
			['POST count', await raw(stack, 'POST', '/threads/count', { token: u1.token, body: {} })],
			['GET missing', await raw(stack, 'GET', `/threads/${randomUUID()}`, { token: u1.token })],
			['no token', await raw(stack, 'GET', `/threads/${t.thread_id}`)],
			['bad JSON', await raw(stack, 'POST', '/threads', {
				token: u1.token, headers: { 'Content-Type': 'application/json' }, body: '{',
			})],
			['DELETE', await raw(stack, 'DELETE', `/threads/${t.thread_id}`, { token: u1.token })],
		];
		const seen = new Set();
		for (const [name, r] of responses) {
			const rid = r.headers.get('x-request-id');
			assert.ok(rid && rid.length > 0, `${name} (HTTP ${r.status}) has no x-request-id`);
			assert.ok(!seen.has(rid), `${name}: x-request-id ${rid} repeated`);
			seen.add(rid);
		}
		assert.equal(responses.at(-1)[1].status, 204);
	});

	test('unknown JSON keys are ignored', async () => {
		const r = await raw(stack, 'POST', '/threads', {
			token: u1.token,
			body: { metadata: { u: 1 }, frobnicate: true, nested: { deep: [1, 2] }, limit: 'x' },
		});
		assert.equal(r.status, 200, r.text);
		assert.deepEqual(r.json.metadata, { u: 1, owner: u1.id });
		const p = await raw(stack, 'PATCH', `/threads/${r.json.thread_id}`, {
			token: u1.token, body: { metadata: { v: 2 }, unknown: { a: 1 } },
		});
		assert.equal(p.status, 200, p.text);
		assert.deepEqual(p.json.metadata, { u: 1, v: 2, owner: u1.id });
		const s = await raw(stack, 'POST', '/threads/search', {
			token: u1.token, body: { ids: [r.json.thread_id], wat: 'ignored', extra_filter: { x: 1 } },
		});
		assert.equal(s.status, 200, s.text);
		assert.deepEqual(ids(s.json), [r.json.thread_id]);
	});

	test('text/plain and missing Content-Type are tolerated', async () => {
		// fetch gives a string body Content-Type: text/plain;charset=UTF-8.
		const plain = await raw(stack, 'POST', '/threads', {
			token: u1.token, body: JSON.stringify({ metadata: { ct: 'plain' } }),
		});
		assert.equal(plain.status, 200, plain.text);
		assert.deepEqual(plain.json.metadata, { ct: 'plain', owner: u1.id });

		// A Buffer body goes without any Content-Type header.
		const none = await raw(stack, 'POST', '/threads', {
			token: u1.token, body: Buffer.from(JSON.stringify({ metadata: { ct: 'none' } })),
		});
		assert.equal(none.status, 200, none.text);
		assertThreadShape(none.json, u1.id, 'created without Content-Type');

		const search = await raw(stack, 'POST', '/threads/search', {
			token: u1.token, body: JSON.stringify({ ids: [plain.json.thread_id] }),
		});
		assert.equal(search.status, 200, search.text);
		assert.deepEqual(ids(search.json), [plain.json.thread_id]);

		const patch = await raw(stack, 'PATCH', `/threads/${plain.json.thread_id}`, {
			token: u1.token, body: JSON.stringify({ metadata: { p: 1 } }),
		});
		assert.equal(patch.status, 200, patch.text);
		assert.equal(patch.json.metadata.p, 1);
	});
});

// ---------------------------------------------------------------------
// create
// ---------------------------------------------------------------------

describe('threads.create', () => {
	test('bare create(): generated UUIDv7, owner stamped, idle, ISO-8601 timestamps', async () => {
		const t = await u1.client.threads.create();
		assertThreadShape(t, u1.id, 'created');
		assert.match(t.thread_id, UUID7_RE);
		// The JS SDK's default body {"metadata":{}} behaves like {}.
		assert.deepEqual(t.metadata, { owner: u1.id });
		assert.equal(t.status, 'idle');
		assert.ok(isoMicros(t.updated_at) >= isoMicros(t.created_at));
		const g = await u1.client.threads.get(t.thread_id);
		assert.deepEqual(core(g), core(t));
		// A raw {} body gives the same shape.
		const r = await raw(stack, 'POST', '/threads', { token: u1.token, body: {} });
		assert.equal(r.status, 200, r.text);
		assert.deepEqual(r.json.metadata, { owner: u1.id });
		assert.match(r.json.thread_id, UUID7_RE);
		assert.notEqual(r.json.thread_id, t.thread_id);
	});

	test('create with threadId and metadata; a client-sent owner is overwritten', async () => {
		const id = randomUUID();
		const t = await u1.client.threads.create({
			threadId: id, metadata: { a: 1, nested: { b: [1, 'x'] }, owner: u2.id },
		});
		assert.equal(t.thread_id, id);
		assertThreadShape(t, u1.id);
		assert.deepEqual(t.metadata, { a: 1, nested: { b: [1, 'x'] }, owner: u1.id });
		// graphId is merged into metadata by the SDK.
		const g = await u1.client.threads.create({ graphId: 'agent' });
		assert.deepEqual(g.metadata, { graph_id: 'agent', owner: u1.id });
	});

	test('ifExists raise (default and explicit) → 409 for an existing own id', async () => {
		const t = await u1.client.threads.create({ metadata: { k: 'orig' } });
		await expectHttpError(u1.client.threads.create({ threadId: t.thread_id }), 409, 'default');
		await expectHttpError(u1.client.threads.create({ threadId: t.thread_id, ifExists: 'raise' }), 409, 'raise');
		const g = await u1.client.threads.get(t.thread_id);
		assert.deepEqual(core(g), core(t));
	});

	test('ifExists do_nothing returns the existing thread to its owner, unchanged', async () => {
		const t = await u1.client.threads.create({ metadata: { k: 'orig' } });
		const again = await u1.client.threads.create({
			threadId: t.thread_id, ifExists: 'do_nothing', metadata: { k: 'new', extra: true },
		});
		assert.equal(again.thread_id, t.thread_id);
		assert.deepEqual(again.metadata, { k: 'orig', owner: u1.id });
		assert.equal(again.created_at, t.created_at);
		const g = await u1.client.threads.get(t.thread_id);
		assert.deepEqual(core(g), core(t));
		// do_nothing with a fresh id simply creates it.
		const fresh = randomUUID();
		const c = await u1.client.threads.create({ threadId: fresh, ifExists: 'do_nothing', metadata: { f: 1 } });
		assert.equal(c.thread_id, fresh);
		assert.deepEqual(c.metadata, { f: 1, owner: u1.id });
	});

	test('cross-user: create with user 1\'s id → 409 (raise and do_nothing); user 1 unchanged', async () => {
		const t = await u1.client.threads.create({ metadata: { secret: 's1' } });
		await u1.client.threads.updateState(t.thread_id, { values: { private: 'v' }, asNode: 'n' });
		const before = await snapshot(u1.client, t.thread_id);
		const n2 = await u2.client.threads.count();
		await expectHttpError(u2.client.threads.create({ threadId: t.thread_id }), 409, 'raise');
		await expectHttpError(u2.client.threads.create({ threadId: t.thread_id, ifExists: 'raise' }), 409, 'raise');
		const e = await expectHttpError(u2.client.threads.create({
			threadId: t.thread_id, ifExists: 'do_nothing', metadata: { x: 1 },
		}), 409, 'do_nothing');
		assert.doesNotMatch(e.text ?? e.message, /s1|private/, 'the 409 must not leak user 1\'s data');
		assert.deepEqual(await snapshot(u1.client, t.thread_id), before);
		assert.equal(await u2.client.threads.count(), n2);
	});

	test('ttl (number and object) is accepted and stored (GET ?include=ttl), update changes it', async () => {
		const a = await u1.client.threads.create({ ttl: 60, metadata: { ttl: 'n' } });
		assertThreadShape(a, u1.id);
		const b = await u1.client.threads.create({ ttl: { ttl: 5, strategy: 'delete' } });
		assertThreadShape(b, u1.id);
		const g = await u1.client.threads.get(a.thread_id, { include: ['ttl'] });
		assert.equal(g.thread_id, a.thread_id);
		assert.deepEqual(g.metadata, { ttl: 'n', owner: u1.id });
		assert.deepEqual(g.ttl, { ttl: 60, strategy: 'delete' });
		assert.deepEqual((await u1.client.threads.get(b.thread_id, { include: ['ttl'] })).ttl, { ttl: 5, strategy: 'delete' });
		await u1.client.threads.update(a.thread_id, { ttl: 30 });
		assert.deepEqual((await u1.client.threads.get(a.thread_id, { include: ['ttl'] })).ttl, { ttl: 30, strategy: 'delete' });
		// user 2 sees neither the thread nor its ttl.
		await expectHttpError(u2.client.threads.get(a.thread_id, { include: ['ttl'] }), 404, 'foreign ttl');
	});

	test('invalid supersteps are refused with 422 and create nothing', async () => {
		const n = await u1.client.threads.count();
		const id = randomUUID();
		for (const supersteps of ['x', [{ updates: 'x' }], [{ updates: [{ values: { ok: 1 }, as_node: 'a' }] },
			{ updates: [{ values: 'not an object', as_node: 'b' }] }]]) {
			const r = await raw(stack, 'POST', '/threads', { token: u1.token, body: { thread_id: id, supersteps } });
			assert.equal(r.status, 422, `${JSON.stringify(supersteps)}: ${r.text}`);
			assert.equal(typeof r.json?.detail, 'string');
		}
		assert.equal(await u1.client.threads.count(), n, 'a refused create left a thread behind');
		await expectHttpError(u1.client.threads.get(id), 404, 'refused id');
	});

	test('supersteps are applied as state updates, in order', async () => {
		const t = await u1.client.threads.create({
			metadata: { s: 1 },
			supersteps: [
				{ updates: [{ values: { a: 1 }, asNode: 'first' }] },
				{ updates: [{ values: { b: 2 }, asNode: 'second' }] },
			],
		});
		assertThreadShape(t, u1.id);
		const s = await u1.client.threads.getState(t.thread_id);
		assert.deepEqual(s.values, { a: 1, b: 2 });
		const h = await u1.client.threads.getHistory(t.thread_id);
		assert.equal(h.length, 2);
		assert.deepEqual(h.map((x) => x.values), [{ a: 1, b: 2 }, { a: 1 }]);
		assert.deepEqual(h[0].metadata.writes, { second: { b: 2 } });
		assert.deepEqual(h[1].metadata.writes, { first: { a: 1 } });
		const g = await u1.client.threads.get(t.thread_id);
		assert.deepEqual(g.values, { a: 1, b: 2 });
	});
});

// ---------------------------------------------------------------------
// get / update / delete
// ---------------------------------------------------------------------

describe('threads.get', () => {
	test('own thread; missing → 404; user 2 on user 1\'s thread → 404 and nothing changes', async () => {
		const t = await u1.client.threads.create({ metadata: { g: 1 } });
		const g = await u1.client.threads.get(t.thread_id);
		assertThreadShape(g, u1.id);
		assert.deepEqual(core(g), core(t));
		assert.equal(g.values, undefined, 'values is omitted before any state update');
		await expectHttpError(u1.client.threads.get(randomUUID()), 404, 'missing');
		const before = await snapshot(u1.client, t.thread_id);
		await expectHttpError(u2.client.threads.get(t.thread_id), 404, 'foreign');
		await expectHttpError(u2.client.threads.get(t.thread_id, { include: ['ttl'] }), 404, 'foreign+include');
		assert.deepEqual(await snapshot(u1.client, t.thread_id), before);
	});
});

describe('threads.update', () => {
	test('metadata is shallow-merged, updated_at refreshed, created_at kept', async () => {
		const t = await u1.client.threads.create({ metadata: { a: 1, obj: { x: 1, y: 2 }, keep: 'k' } });
		await clockPast(t.updated_at);
		const u = await u1.client.threads.update(t.thread_id, { metadata: { a: 2, obj: { z: 3 }, b: 'new' } });
		assert.deepEqual(u.metadata, { a: 2, obj: { z: 3 }, keep: 'k', b: 'new', owner: u1.id });
		assert.equal(u.created_at, t.created_at);
		assertIso(u.updated_at, 'updated_at');
		assert.ok(isoMicros(u.updated_at) > isoMicros(t.updated_at),
			`updated_at not refreshed: ${t.updated_at} → ${u.updated_at}`);
		const g = await u1.client.threads.get(t.thread_id);
		assert.deepEqual(g.metadata, u.metadata);
		assert.equal(g.updated_at, u.updated_at);
		// An update with ttl only keeps the metadata.
		const v = await u1.client.threads.update(t.thread_id, { ttl: 30 });
		assert.deepEqual(v.metadata, u.metadata);
	});

	test('owner can be neither changed nor removed', async () => {
		const t = await u1.client.threads.create({ metadata: { a: 1 } });
		const u = await u1.client.threads.update(t.thread_id, { metadata: { owner: u2.id, b: 2 } });
		assert.equal(u.metadata.owner, u1.id);
		assert.equal(u.metadata.b, 2);
		const n = await u1.client.threads.update(t.thread_id, { metadata: { owner: null } });
		assert.equal(n.metadata.owner, u1.id);
		await expectHttpError(u2.client.threads.get(t.thread_id), 404, 'still not user 2\'s');
		const g = await u1.client.threads.get(t.thread_id);
		assert.deepEqual(g.metadata, { a: 1, b: 2, owner: u1.id });
	});

	test('returnMinimal: the SDK gets undefined, the wire is 204 with an empty body', async () => {
		const t = await u1.client.threads.create({ metadata: { a: 1 } });
		const r = await u1.client.threads.update(t.thread_id, { metadata: { m: 1 }, returnMinimal: true });
		assert.equal(r, undefined);
		const w = await raw(stack, 'PATCH', `/threads/${t.thread_id}`, {
			token: u1.token, headers: { Prefer: 'return=minimal' }, body: { metadata: { w: 2 } },
		});
		assert.equal(w.status, 204);
		assert.equal(w.text, '');
		const g = await u1.client.threads.get(t.thread_id);
		assert.deepEqual(g.metadata, { a: 1, m: 1, w: 2, owner: u1.id });
	});

	test('cross-user: update → 404 (also minimal), user 1\'s thread unchanged', async () => {
		const t = await u1.client.threads.create({ metadata: { a: 1 } });
		const before = await snapshot(u1.client, t.thread_id);
		await expectHttpError(u2.client.threads.update(t.thread_id, { metadata: { owner: u2.id } }), 404, 'update');
		await expectHttpError(u2.client.threads.update(t.thread_id, { metadata: { x: 1 }, returnMinimal: true }),
			404, 'update minimal');
		await expectHttpError(u2.client.threads.update(t.thread_id, { ttl: 1 }), 404, 'update ttl');
		await expectHttpError(u1.client.threads.update(randomUUID(), { metadata: { x: 1 } }), 404, 'missing');
		assert.deepEqual(await snapshot(u1.client, t.thread_id), before);
	});
});

describe('threads.delete', () => {
	test('own thread: SDK undefined / wire 204 empty; afterwards 404 everywhere', async () => {
		const t = await u1.client.threads.create();
		await u1.client.threads.updateState(t.thread_id, { values: { a: 1 } });
		assert.equal(await u1.client.threads.delete(t.thread_id), undefined);
		await expectHttpError(u1.client.threads.get(t.thread_id), 404, 'get after delete');
		await expectHttpError(u1.client.threads.getState(t.thread_id), 404, 'state after delete');
		await expectHttpError(u1.client.threads.getHistory(t.thread_id), 404, 'history after delete');
		await expectHttpError(u1.client.threads.delete(t.thread_id), 404, 'delete twice');
		const s = await u1.client.threads.search({ ids: [t.thread_id] });
		assert.deepEqual(s, []);

		const t2 = await u1.client.threads.create();
		const w = await raw(stack, 'DELETE', `/threads/${t2.thread_id}`, { token: u1.token });
		assert.equal(w.status, 204);
		assert.equal(w.text, '');
		const again = await raw(stack, 'DELETE', `/threads/${t2.thread_id}`, { token: u1.token });
		assert.equal(again.status, 404);
	});

	test('delete removes the checkpoints: the id re-created (by anyone) starts empty', async () => {
		const t = await threadWithHistory(u1, { d: 1 }, [{ secret: 'u1-one' }, { secret: 'u1-two' }]);
		await u1.client.threads.delete(t.thread_id);
		const again = await u1.client.threads.create({ threadId: t.thread_id });
		assert.deepEqual(again.metadata, { owner: u1.id });
		assert.equal(again.values, undefined);
		assert.deepEqual((await u1.client.threads.getState(t.thread_id)).values, {});
		assert.deepEqual(await u1.client.threads.getHistory(t.thread_id), []);
		await expectHttpError(u1.client.threads.getState(t.thread_id, t.checkpoints[0].checkpoint_id), 404,
			'old checkpoint id after re-create');

		// The same with user 2 taking the freed id: nothing of user 1's shows.
		const t2 = await threadWithHistory(u1, {}, [{ secret: 'u1-three' }]);
		await u1.client.threads.delete(t2.thread_id);
		const theirs = await u2.client.threads.create({ threadId: t2.thread_id });
		assert.deepEqual(theirs.metadata, { owner: u2.id });
		assert.deepEqual((await u2.client.threads.getState(t2.thread_id)).values, {});
		assert.deepEqual(await u2.client.threads.getHistory(t2.thread_id), []);
		await expectHttpError(u2.client.threads.getState(t2.thread_id, t2.checkpoints[0].checkpoint_id), 404,
			'user 1\'s old checkpoint under user 2\'s thread');
		await expectHttpError(u1.client.threads.get(t2.thread_id), 404, 'now user 2\'s');
	});

	test('cross-user: delete → 404 and the thread survives unchanged', async () => {
		const t = await u1.client.threads.create({ metadata: { d: 1 } });
		await u1.client.threads.updateState(t.thread_id, { values: { keep: true } });
		const before = await snapshot(u1.client, t.thread_id);
		await expectHttpError(u2.client.threads.delete(t.thread_id), 404, 'foreign delete');
		assert.deepEqual(await snapshot(u1.client, t.thread_id), before);
	});
});

// ---------------------------------------------------------------------
// search and count
// ---------------------------------------------------------------------

describe('threads.search and threads.count', () => {
	test('metadata containment: nested objects recurse, array values, no match', async () => {
		const grp = group('contain');
		const a = await u1.client.threads.create({
			metadata: { grp, kind: 'a', nested: { x: 1, y: { z: 'deep' } }, tags: ['red', 'blue'] },
		});
		const b = await u1.client.threads.create({
			metadata: { grp, kind: 'b', nested: { x: 2 }, tags: ['green'] },
		});
		const c = await u1.client.threads.create({
			metadata: { grp, kind: 'a', nested: { x: 1, y: { z: 'other' } }, n: 7, flag: false },
		});
		const cases = [
			['grp only', { grp }, [a, b, c]],
			['scalar', { grp, kind: 'a' }, [a, c]],
			['nested object partial', { grp, nested: { x: 1 } }, [a, c]],
			['nested two levels', { grp, nested: { y: { z: 'deep' } } }, [a]],
			['array value', { grp, tags: ['red', 'blue'] }, [a]],
			['array value other', { grp, tags: ['green'] }, [b]],
			['number', { grp, n: 7 }, [c]],
			['false', { grp, flag: false }, [c]],
			['own owner', { grp, owner: u1.id }, [a, b, c]],
			['no match scalar', { grp, kind: 'zzz' }, []],
			['no match nested', { grp, nested: { x: 1, missing: 5 } }, []],
			['no match array', { grp, tags: ['purple'] }, []],
			['type mismatch', { grp, n: '7' }, []],
			['missing key', { grp, absent: null }, []],
			['other owner', { grp, owner: u2.id }, []],
		];
		for (const [name, metadata, want] of cases) {
			const got = await u1.client.threads.search({ metadata, limit: 100 });
			assert.deepEqual(sorted(ids(got)), sorted(ids(want)), `search ${name}`);
			for (const t of got) {
				assertThreadShape(t, u1.id, `search ${name}`);
			}
			const n = await u1.client.threads.count({ metadata });
			assert.equal(n, want.length, `count ${name}`);
		}
	});

	test('count answers a bare JSON integer', async () => {
		const grp = group('bare');
		await u1.client.threads.create({ metadata: { grp } });
		const r = await raw(stack, 'POST', '/threads/count', { token: u1.token, body: { metadata: { grp } } });
		assert.equal(r.status, 200, r.text);
		assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
		assert.match(r.text.trim(), /^1$/);
		const all = await raw(stack, 'POST', '/threads/count', { token: u1.token, body: {} });
		assert.equal(all.status, 200, all.text);
		assert.equal(typeof all.json, 'number');
		assert.ok(Number.isInteger(all.json) && all.json >= 1);
	});

	test('values filter, status filter, ids', async () => {
		const grp = group('values');
		const v1 = await threadWithHistory(u1, { grp }, [{ color: 'red', n: 1, nested: { k: 'v', j: 2 } }]);
		const v2 = await threadWithHistory(u1, { grp }, [{ color: 'blue', n: 2 }]);
		const v3 = await u1.client.threads.create({ metadata: { grp } });
		const cases = [
			['scalar', { color: 'red' }, [v1]],
			['number', { n: 2 }, [v2]],
			['nested', { nested: { k: 'v' } }, [v1]],
			['no match', { color: 'green' }, []],
			['no match nested', { nested: { k: 'w' } }, []],
		];
		for (const [name, values, want] of cases) {
			const got = await u1.client.threads.search({ metadata: { grp }, values });
			assert.deepEqual(sorted(ids(got)), sorted(want.map((x) => x.thread_id)), `values ${name}`);
			assert.equal(await u1.client.threads.count({ metadata: { grp }, values }), want.length, `count values ${name}`);
		}
		const [red] = await u1.client.threads.search({ metadata: { grp }, values: { color: 'red' } });
		assert.deepEqual(red.values, { color: 'red', n: 1, nested: { k: 'v', j: 2 } });

		const idle = await u1.client.threads.search({ metadata: { grp }, status: 'idle' });
		assert.deepEqual(sorted(ids(idle)), sorted([v1.thread_id, v2.thread_id, v3.thread_id]));
		assert.deepEqual(await u1.client.threads.search({ metadata: { grp }, status: 'busy' }), []);
		assert.equal(await u1.client.threads.count({ metadata: { grp }, status: 'idle' }), 3);
		assert.equal(await u1.client.threads.count({ metadata: { grp }, status: 'error' }), 0);

		const byIds = await u1.client.threads.search({ ids: [v1.thread_id, v3.thread_id] });
		assert.deepEqual(sorted(ids(byIds)), sorted([v1.thread_id, v3.thread_id]));
		const byIdsMissing = await u1.client.threads.search({ ids: [randomUUID()] });
		assert.deepEqual(byIdsMissing, []);
		const combined = await u1.client.threads.search({ ids: [v1.thread_id, v2.thread_id], values: { n: 2 } });
		assert.deepEqual(ids(combined), [v2.thread_id]);
	});

	test('pagination: 25 threads, limit 10 → 10/10/5 with X-Pagination-Total/Next', async () => {
		const grp = group('page');
		const made = [];
		for (let i = 0; i < 25; i++) {
			made.push((await u1.client.threads.create({ metadata: { grp, i } })).thread_id);
		}
		const seen = [];
		const sizes = [];
		for (const offset of [0, 10, 20]) {
			const page = await u1.client.threads.search({ metadata: { grp }, limit: 10, offset });
			sizes.push(page.length);
			seen.push(...ids(page));
		}
		assert.deepEqual(sizes, [10, 10, 5]);
		assert.deepEqual(sorted(seen), sorted(made), 'pages must cover every thread exactly once');
		// Default order is created_at desc: the last made comes first.
		assert.deepEqual(seen, [...made].reverse());

		// X-Pagination-Total is offset + page + 1 while more follow (the
		// reference server's rule), never a count of every match.
		const expectNext = { 0: '10', 10: '20', 20: null, 30: null };
		const expectTotal = { 0: '11', 10: '21', 20: '25', 30: '30' };
		for (const offset of [0, 10, 20, 30]) {
			const r = await raw(stack, 'POST', '/threads/search', {
				token: u1.token, body: { metadata: { grp }, limit: 10, offset },
			});
			assert.equal(r.status, 200, r.text);
			assert.equal(r.json.length, offset === 30 ? 0 : offset === 20 ? 5 : 10);
			assert.equal(r.headers.get('x-pagination-total'), expectTotal[offset], `X-Pagination-Total at offset ${offset}`);
			assert.equal(r.headers.get('x-pagination-next'), expectNext[offset], `X-Pagination-Next at offset ${offset}`);
		}
		// A page ending exactly at the last thread has no next.
		const end = await raw(stack, 'POST', '/threads/search', {
			token: u1.token, body: { metadata: { grp }, limit: 5, offset: 20 },
		});
		assert.equal(end.json.length, 5);
		assert.equal(end.headers.get('x-pagination-total'), '25');
		assert.equal(end.headers.get('x-pagination-next'), null, 'X-Pagination-Next on the last page');
		assert.equal(await u1.client.threads.count({ metadata: { grp } }), 25);
		// The SDK's default limit is 10.
		assert.equal((await u1.client.threads.search({ metadata: { grp } })).length, 10);
		const big = await u1.client.threads.search({ metadata: { grp }, limit: 1000 });
		assert.equal(big.length, 25);
	});

	test('sortBy thread_id/status/created_at/updated_at × sortOrder asc/desc', async () => {
		const grp = group('sort');
		const made = [];
		for (let i = 0; i < 5; i++) {
			const t = await u1.client.threads.create({ threadId: randomUUID(), metadata: { grp, i } });
			made.push(t);
			await clockPast(t.created_at);
		}
		// Update in another order, so updated_at order differs from created_at.
		const updateOrder = [2, 0, 4, 1, 3];
		let last = made[made.length - 1].created_at;
		for (const i of updateOrder) {
			await clockPast(last);
			last = (await u1.client.threads.update(made[i].thread_id, { metadata: { touched: true } })).updated_at;
		}
		const created = made.map((t) => t.thread_id);
		const updated = updateOrder.map((i) => made[i].thread_id);
		const byId = sorted(created);
		const expected = {
			created_at: created,
			updated_at: updated,
			thread_id: byId,
		};
		for (const [col, asc] of Object.entries(expected)) {
			const gotAsc = await u1.client.threads.search({ metadata: { grp }, sortBy: col, sortOrder: 'asc' });
			assert.deepEqual(ids(gotAsc), asc, `sortBy ${col} asc`);
			const gotDesc = await u1.client.threads.search({ metadata: { grp }, sortBy: col, sortOrder: 'desc' });
			assert.deepEqual(ids(gotDesc), [...asc].reverse(), `sortBy ${col} desc`);
		}
		for (const order of ['asc', 'desc']) {
			const got = await u1.client.threads.search({ metadata: { grp }, sortBy: 'status', sortOrder: order });
			assert.deepEqual(sorted(ids(got)), byId, `sortBy status ${order}`);
			const st = got.map((t) => t.status);
			const want = [...st].sort();
			assert.deepEqual(st, order === 'asc' ? want : want.reverse(), `status order ${order}`);
		}
		// Defaults: created_at, desc.
		assert.deepEqual(ids(await u1.client.threads.search({ metadata: { grp } })), [...created].reverse());
		assert.deepEqual(ids(await u1.client.threads.search({ metadata: { grp }, sortBy: 'created_at' })),
			[...created].reverse());
		// Paging keeps the order.
		const p1 = await u1.client.threads.search({ metadata: { grp }, sortBy: 'thread_id', sortOrder: 'asc', limit: 2 });
		const p2 = await u1.client.threads.search({
			metadata: { grp }, sortBy: 'thread_id', sortOrder: 'asc', limit: 2, offset: 2,
		});
		assert.deepEqual([...ids(p1), ...ids(p2)], byId.slice(0, 4));
	});

	test('select returns only the selected keys', async () => {
		const grp = group('select');
		const t = await u1.client.threads.create({ metadata: { grp, s: 1 } });
		const selections = [
			['thread_id'],
			['thread_id', 'metadata'],
			['thread_id', 'status', 'created_at', 'updated_at'],
			['metadata', 'config'],
		];
		for (const select of selections) {
			const got = await u1.client.threads.search({ metadata: { grp }, select });
			assert.equal(got.length, 1, `select ${select}`);
			assert.deepEqual(Object.keys(got[0]).sort(), [...select].sort(), `select ${select}`);
			for (const k of select) {
				if (k === 'metadata') {
					assert.deepEqual(got[0].metadata, { grp, s: 1, owner: u1.id });
				} else if (k !== 'config') {
					assert.equal(got[0][k], t[k], `select ${select}: ${k}`);
				}
			}
		}
	});

	test('cross-user: search and count never include user 1\'s threads', async () => {
		const grp = group('xsearch');
		const a = await u1.client.threads.create({ metadata: { grp, shared: 'yes' } });
		await u1.client.threads.updateState(a.thread_id, { values: { v: 'secret' } });
		const mine = await u2.client.threads.create({ metadata: { grp, shared: 'yes' } });
		const before = await snapshot(u1.client, a.thread_id);

		const filters = [
			{},
			{ metadata: { grp } },
			{ metadata: { shared: 'yes' } },
			{ metadata: { owner: u1.id } },
			{ metadata: { grp, owner: u1.id } },
			{ values: { v: 'secret' } },
			{ ids: [a.thread_id] },
			{ ids: [a.thread_id, mine.thread_id] },
			{ status: 'idle' },
		];
		for (const f of filters) {
			const got = await u2.client.threads.search({ ...f, limit: 1000 });
			for (const t of got) {
				assert.equal(t.metadata.owner, u2.id, `u2 search ${JSON.stringify(f)} returned a foreign thread`);
			}
			assert.ok(!ids(got).includes(a.thread_id), `u2 search ${JSON.stringify(f)} includes u1's thread`);
			if (f.ids === undefined) {
				const n = await u2.client.threads.count(f);
				assert.equal(n, got.length, `u2 count ${JSON.stringify(f)} differs from its search`);
			}
		}
		assert.equal(await u2.client.threads.count({ metadata: { owner: u1.id } }), 0);
		assert.equal(await u2.client.threads.count({ values: { v: 'secret' } }), 0);
		assert.deepEqual(ids(await u2.client.threads.search({ metadata: { grp } })), [mine.thread_id]);
		assert.deepEqual(ids(await u1.client.threads.search({ metadata: { grp } })), [a.thread_id]);
		assert.equal(await u2.client.threads.count({ metadata: { grp } }), 1);
		assert.equal(await u1.client.threads.count({ metadata: { grp } }), 1);
		// select must not open a way around the owner filter either.
		const sel = await u2.client.threads.search({ metadata: { grp }, select: ['thread_id'] });
		assert.deepEqual(ids(sel), [mine.thread_id]);
		assert.deepEqual(await snapshot(u1.client, a.thread_id), before);
	});

	test('filter keys with quotes, dots, $ and SQL text: exact-key match or nothing, never an error', async () => {
		const grp = group('weird');
		const odd = "we'ird.\"key\"$ OR 1=1 --";
		const t = await u1.client.threads.create({ metadata: { grp, a: { b: 1 }, [odd]: 'yes' } });
		// The literal key matches its own thread (or the filter is refused).
		const r = await raw(stack, 'POST', '/threads/search', { token: u1.token, body: { metadata: { grp, [odd]: 'yes' } } });
		assert.ok(r.status === 200 || r.status === 422, `HTTP ${r.status}: ${r.text}`);
		if (r.status === 200) {
			assert.deepEqual(ids(r.json), [t.thread_id]);
		}
		// Keys that a path-pasting implementation would resolve to a.b.
		for (const key of ['a.b', '$.a.b', 'a"."b', "a'.'b", 'a[0]', '*', '$']) {
			const s = await raw(stack, 'POST', '/threads/search', { token: u1.token, body: { metadata: { grp, [key]: 1 } } });
			assert.ok(s.status === 200 || s.status === 422, `key ${key}: HTTP ${s.status}: ${s.text}`);
			if (s.status === 200) {
				assert.deepEqual(s.json, [], `key ${key} matched wrongly`);
			}
		}
	});
});

// ---------------------------------------------------------------------
// copy and prune
// ---------------------------------------------------------------------

describe('threads.copy', () => {
	test('new id, same owner, metadata/values/history copied; the copy is independent', async () => {
		const src = await threadWithHistory(u1, { grp: group('copy'), k: 'v', deep: { x: [1] } },
			[{ a: 1 }, { b: 2 }, { c: 3 }]);
		const srcSnap = await snapshot(u1.client, src.thread_id);
		const cp = await u1.client.threads.copy(src.thread_id);
		assertThreadShape(cp, u1.id, 'copy');
		assert.notEqual(cp.thread_id, src.thread_id);
		for (const [k, v] of Object.entries(srcSnap.thread.metadata)) {
			assert.deepEqual(cp.metadata[k], v, `copied metadata.${k}`);
		}
		const cpSnap = await snapshot(u1.client, cp.thread_id);
		assert.deepEqual(cpSnap.thread.values, { a: 1, b: 2, c: 3 });
		assert.deepEqual(cpSnap.state.values, srcSnap.state.values);
		assert.deepEqual(cpSnap.history.map((s) => s.values), srcSnap.history.map((s) => s.values));
		assert.deepEqual(cpSnap.history.map((s) => s.metadata?.writes), srcSnap.history.map((s) => s.metadata?.writes));
		for (const s of cpSnap.history) {
			assert.equal(s.checkpoint.thread_id, cp.thread_id, 'copied checkpoints belong to the copy');
		}
		// Changing the copy leaves the source alone.
		await u1.client.threads.updateState(cp.thread_id, { values: { d: 4 } });
		await u1.client.threads.update(cp.thread_id, { metadata: { k: 'changed' } });
		assert.deepEqual(await snapshot(u1.client, src.thread_id), srcSnap);
		assert.deepEqual((await u1.client.threads.getState(cp.thread_id)).values, { a: 1, b: 2, c: 3, d: 4 });
		// Copy of a thread without state.
		const empty = await u1.client.threads.create({ metadata: { e: 1 } });
		const ecp = await u1.client.threads.copy(empty.thread_id);
		assert.equal(ecp.metadata.e, 1);
		assert.deepEqual(await u1.client.threads.getHistory(ecp.thread_id), []);
		// A copy is its owner's only.
		await expectHttpError(u2.client.threads.get(cp.thread_id), 404, 'user 2 on the copy');
		await expectHttpError(u2.client.threads.getHistory(cp.thread_id), 404, 'user 2 on the copy\'s history');
	});

	test('copy of a missing thread → 409; user 2 copying user 1\'s thread → 409, nothing created', async () => {
		await expectHttpError(u1.client.threads.copy(randomUUID()), 409, 'missing');
		const src = await threadWithHistory(u1, { grp: group('xcopy') }, [{ secret: 1 }]);
		const before = await snapshot(u1.client, src.thread_id);
		const n1 = await u1.client.threads.count();
		const n2 = await u2.client.threads.count();
		await expectHttpError(u2.client.threads.copy(src.thread_id), 409, 'foreign');
		assert.equal(await u2.client.threads.count(), n2, 'user 2 got no new thread');
		assert.equal(await u1.client.threads.count(), n1, 'user 1 got no new thread');
		assert.equal(await u2.client.threads.count({ values: { secret: 1 } }), 0);
		assert.deepEqual(await snapshot(u1.client, src.thread_id), before);
	});
});

describe('threads.prune', () => {
	test('delete strategy prunes only the caller\'s threads and counts them', async () => {
		const p1 = await u1.client.threads.create();
		const p2 = await u1.client.threads.create();
		const q1 = await u2.client.threads.create();
		await u1.client.threads.updateState(p1.thread_id, { values: { p: 1 } });
		const before = await snapshot(u1.client, p1.thread_id);

		const r2 = await u2.client.threads.prune([p1.thread_id, q1.thread_id]);
		assert.deepEqual(r2, { pruned_count: 1 });
		await expectHttpError(u2.client.threads.get(q1.thread_id), 404, 'u2 pruned own');
		assert.deepEqual(await snapshot(u1.client, p1.thread_id), before, 'user 1\'s thread untouched');
		assert.deepEqual(await u2.client.threads.prune([p2.thread_id]), { pruned_count: 0 });
		await u1.client.threads.get(p2.thread_id);

		const r1 = await u1.client.threads.prune([p1.thread_id, p2.thread_id, randomUUID()]);
		assert.deepEqual(r1, { pruned_count: 2 });
		await expectHttpError(u1.client.threads.get(p1.thread_id), 404, 'pruned p1');
		await expectHttpError(u1.client.threads.get(p2.thread_id), 404, 'pruned p2');
		assert.deepEqual(await u1.client.threads.prune([]), { pruned_count: 0 });
		// Pruned threads take their checkpoints with them.
		await u1.client.threads.create({ threadId: p1.thread_id });
		assert.deepEqual(await u1.client.threads.getHistory(p1.thread_id), []);
	});

	test('keep_latest keeps the thread and its latest state only', async () => {
		const t = await threadWithHistory(u1, { grp: group('keep') }, [{ a: 1 }, { b: 2 }, { c: 3 }]);
		const latest = await u1.client.threads.getState(t.thread_id);
		const foreign = await u2.client.threads.prune([t.thread_id], { strategy: 'keep_latest' });
		assert.deepEqual(foreign, { pruned_count: 0 });
		assert.equal((await u1.client.threads.getHistory(t.thread_id)).length, 3);

		const r = await u1.client.threads.prune([t.thread_id], { strategy: 'keep_latest' });
		assert.deepEqual(r, { pruned_count: 1 });
		const h = await u1.client.threads.getHistory(t.thread_id);
		assert.equal(h.length, 1);
		assert.equal(h[0].checkpoint.checkpoint_id, latest.checkpoint.checkpoint_id);
		assert.deepEqual(h[0].values, { a: 1, b: 2, c: 3 });
		const s = await u1.client.threads.getState(t.thread_id);
		assert.deepEqual(s.values, { a: 1, b: 2, c: 3 });
		await u1.client.threads.get(t.thread_id);
	});
});

// ---------------------------------------------------------------------
// state: getState / updateState / patchState / getHistory
// ---------------------------------------------------------------------

describe('threads state', () => {
	test('getState is empty before any update', async () => {
		const t = await u1.client.threads.create();
		const s = await u1.client.threads.getState(t.thread_id);
		assert.deepEqual(s.values, {});
		assert.deepEqual(s.next, []);
		assert.deepEqual(s.tasks, []);
		assert.deepEqual(await u1.client.threads.getHistory(t.thread_id), []);
	});

	test('updateState returns {checkpoint}; new ids, parent links, as_node writes, shallow merge', async () => {
		const t = await u1.client.threads.create();
		const r1 = await u1.client.threads.updateState(t.thread_id, { values: { a: 1, list: [1] }, asNode: 'agent' });
		assert.deepEqual(Object.keys(r1), ['checkpoint']);
		for (const k of ['thread_id', 'checkpoint_ns', 'checkpoint_id', 'checkpoint_map']) {
			assert.ok(k in r1.checkpoint, `checkpoint.${k} missing: ${JSON.stringify(r1)}`);
		}
		assert.equal(r1.checkpoint.thread_id, t.thread_id);
		assert.equal(r1.checkpoint.checkpoint_ns, '');
		assert.match(r1.checkpoint.checkpoint_id, UUID_RE);

		const s1 = await u1.client.threads.getState(t.thread_id);
		for (const k of ['values', 'next', 'tasks', 'checkpoint', 'metadata', 'created_at', 'parent_checkpoint', 'interrupts']) {
			assert.ok(k in s1, `ThreadState.${k} missing: ${JSON.stringify(s1)}`);
		}
		assert.deepEqual(s1.values, { a: 1, list: [1] });
		assert.equal(s1.checkpoint.checkpoint_id, r1.checkpoint.checkpoint_id);
		assert.equal(s1.checkpoint.thread_id, t.thread_id);
		assert.equal(s1.parent_checkpoint ?? null, null, 'the first checkpoint has no parent');
		assert.deepEqual(s1.metadata.writes, { agent: { a: 1, list: [1] } });
		assertIso(s1.created_at, 'state.created_at');
		assert.ok(Array.isArray(s1.next));

		const r2 = await u1.client.threads.updateState(t.thread_id, { values: { b: 2, list: [2] }, asNode: 'tool' });
		assert.notEqual(r2.checkpoint.checkpoint_id, r1.checkpoint.checkpoint_id);
		const s2 = await u1.client.threads.getState(t.thread_id);
		assert.deepEqual(s2.values, { a: 1, b: 2, list: [2] });
		assert.equal(s2.checkpoint.checkpoint_id, r2.checkpoint.checkpoint_id);
		assert.equal(s2.parent_checkpoint?.checkpoint_id, r1.checkpoint.checkpoint_id);
		assert.deepEqual(s2.metadata.writes, { tool: { b: 2, list: [2] } });
		assert.ok(isoMicros(s2.created_at) >= isoMicros(s1.created_at));
		// The thread's values follow the latest checkpoint.
		const g = await u1.client.threads.get(t.thread_id);
		assert.deepEqual(g.values, { a: 1, b: 2, list: [2] });

		// An array of updates is applied in order.
		await u1.client.threads.updateState(t.thread_id, { values: [{ x: 1 }, { x: 2, y: 3 }], asNode: 'batch' });
		assert.deepEqual((await u1.client.threads.getState(t.thread_id)).values, { a: 1, b: 2, list: [2], x: 2, y: 3 });
	});

	test('getState by checkpoint id and by checkpoint object; fork from an older checkpoint', async () => {
		const t = await threadWithHistory(u1, {}, [{ a: 1 }, { b: 2 }]);
		const [c1, c2] = t.checkpoints;
		const byId = await u1.client.threads.getState(t.thread_id, c1.checkpoint_id);
		assert.equal(byId.checkpoint.checkpoint_id, c1.checkpoint_id);
		assert.deepEqual(byId.values, { a: 1 });
		const byObj = await u1.client.threads.getState(t.thread_id, { checkpoint_id: c1.checkpoint_id });
		assert.equal(byObj.checkpoint.checkpoint_id, c1.checkpoint_id);
		assert.deepEqual(byObj.values, { a: 1 });
		const byFull = await u1.client.threads.getState(t.thread_id, c2);
		assert.equal(byFull.checkpoint.checkpoint_id, c2.checkpoint_id);
		assert.deepEqual(byFull.values, { a: 1, b: 2 });
		assert.equal(byFull.parent_checkpoint?.checkpoint_id, c1.checkpoint_id);
		await expectHttpError(u1.client.threads.getState(t.thread_id, randomUUID()), 404, 'unknown checkpoint id');
		await expectHttpError(u1.client.threads.getState(t.thread_id, { checkpoint_id: randomUUID() }), 404,
			'unknown checkpoint object');

		// Fork: an update whose parent is c1 (checkpointId, then checkpoint object).
		const f1 = await u1.client.threads.updateState(t.thread_id, { values: { c: 3 }, checkpointId: c1.checkpoint_id });
		const sf1 = await u1.client.threads.getState(t.thread_id, f1.checkpoint.checkpoint_id);
		assert.deepEqual(sf1.values, { a: 1, c: 3 });
		assert.equal(sf1.parent_checkpoint?.checkpoint_id, c1.checkpoint_id);
		const f2 = await u1.client.threads.updateState(t.thread_id, {
			values: { d: 4 }, checkpoint: { checkpoint_id: c1.checkpoint_id },
		});
		const sf2 = await u1.client.threads.getState(t.thread_id, f2.checkpoint.checkpoint_id);
		assert.deepEqual(sf2.values, { a: 1, d: 4 });
		assert.equal(sf2.parent_checkpoint?.checkpoint_id, c1.checkpoint_id);
		// The latest state is the newest checkpoint.
		assert.equal((await u1.client.threads.getState(t.thread_id)).checkpoint.checkpoint_id, f2.checkpoint.checkpoint_id);
		// The older checkpoints are unchanged.
		assert.deepEqual((await u1.client.threads.getState(t.thread_id, c2.checkpoint_id)).values, { a: 1, b: 2 });
	});

	test('patchState merges metadata into the latest checkpoint (thread id or config)', async () => {
		const t = await threadWithHistory(u1, {}, [{ a: 1 }, { b: 2 }]);
		const before = await u1.client.threads.getState(t.thread_id);
		await u1.client.threads.patchState(t.thread_id, { reviewed: true, by: 'me' });
		const s = await u1.client.threads.getState(t.thread_id);
		assert.equal(s.checkpoint.checkpoint_id, before.checkpoint.checkpoint_id, 'patch does not add a checkpoint');
		assert.deepEqual(s.values, before.values);
		assert.deepEqual(s.metadata, { ...before.metadata, reviewed: true, by: 'me' });
		await u1.client.threads.patchState({ configurable: { thread_id: t.thread_id } }, { by: 'config', n: 1 });
		const s2 = await u1.client.threads.getState(t.thread_id);
		assert.deepEqual(s2.metadata, { ...before.metadata, reviewed: true, by: 'config', n: 1 });
		// The older checkpoint's metadata is untouched.
		const older = await u1.client.threads.getState(t.thread_id, t.checkpoints[0].checkpoint_id);
		assert.equal(older.metadata.reviewed, undefined);
		await expectHttpError(u1.client.threads.patchState(randomUUID(), { x: 1 }), 404, 'missing thread');
	});

	test('getHistory: newest first, limit, before, metadata filter, checkpoint; GET form', async () => {
		const t = await threadWithHistory(u1, {}, [{ a: 1 }, { b: 2 }, { c: 3 }]);
		const [c1, c2, c3] = t.checkpoints.map((c) => c.checkpoint_id);
		const h = await u1.client.threads.getHistory(t.thread_id);
		assert.deepEqual(h.map((s) => s.checkpoint.checkpoint_id), [c3, c2, c1]);
		assert.deepEqual(h.map((s) => s.values), [{ a: 1, b: 2, c: 3 }, { a: 1, b: 2 }, { a: 1 }]);
		assert.equal(h[0].parent_checkpoint?.checkpoint_id, c2);
		assert.equal(h[1].parent_checkpoint?.checkpoint_id, c1);
		assert.equal(h[2].parent_checkpoint ?? null, null);
		for (const s of h) {
			assertIso(s.created_at, 'history created_at');
			assert.equal(s.checkpoint.thread_id, t.thread_id);
		}
		const created = h.map((s) => isoMicros(s.created_at));
		assert.ok(created[0] >= created[1] && created[1] >= created[2], 'newest first');

		assert.deepEqual((await u1.client.threads.getHistory(t.thread_id, { limit: 2 }))
			.map((s) => s.checkpoint.checkpoint_id), [c3, c2]);
		assert.deepEqual((await u1.client.threads.getHistory(t.thread_id, { limit: 1 }))
			.map((s) => s.checkpoint.checkpoint_id), [c3]);
		assert.deepEqual((await u1.client.threads.getHistory(t.thread_id, {
			before: { configurable: { checkpoint_id: c3 } },
		})).map((s) => s.checkpoint.checkpoint_id), [c2, c1]);
		assert.deepEqual((await u1.client.threads.getHistory(t.thread_id, {
			before: { configurable: { checkpoint_id: c2 } }, limit: 5,
		})).map((s) => s.checkpoint.checkpoint_id), [c1]);
		assert.deepEqual((await u1.client.threads.getHistory(t.thread_id, {
			checkpoint: { checkpoint_id: c2 },
		})).map((s) => s.checkpoint.checkpoint_id), [c2, c1]);

		await u1.client.threads.patchState(t.thread_id, { mark: 'm' });
		assert.deepEqual((await u1.client.threads.getHistory(t.thread_id, { metadata: { mark: 'm' } }))
			.map((s) => s.checkpoint.checkpoint_id), [c3]);
		assert.deepEqual(await u1.client.threads.getHistory(t.thread_id, { metadata: { mark: 'other' } }), []);
		assert.deepEqual((await u1.client.threads.getHistory(t.thread_id, { metadata: { writes: { node1: { b: 2 } } } }))
			.map((s) => s.checkpoint.checkpoint_id), [c2]);

		const g = await raw(stack, 'GET', `/threads/${t.thread_id}/history?limit=2`, { token: u1.token });
		assert.equal(g.status, 200, g.text);
		assert.deepEqual(g.json.map((s) => s.checkpoint.checkpoint_id), [c3, c2]);
		const gb = await raw(stack, 'GET', `/threads/${t.thread_id}/history?limit=10&before=${c2}`, { token: u1.token });
		assert.equal(gb.status, 200, gb.text);
		assert.deepEqual(gb.json.map((s) => s.checkpoint.checkpoint_id), [c1]);
	});

	test('cross-user: every state method on user 1\'s thread → 404; checkpoints stay per owner', async () => {
		const t = await threadWithHistory(u1, { grp: group('xstate') }, [{ secret: 'one' }, { secret: 'two' }]);
		const [c1] = t.checkpoints;
		const before = await snapshot(u1.client, t.thread_id);
		const th = u2.client.threads;

		await expectHttpError(th.getState(t.thread_id), 404, 'getState');
		await expectHttpError(th.getState(t.thread_id, c1.checkpoint_id), 404, 'getState by id');
		await expectHttpError(th.getState(t.thread_id, { checkpoint_id: c1.checkpoint_id }), 404, 'getState by object');
		await expectHttpError(th.updateState(t.thread_id, { values: { secret: 'mine' }, asNode: 'x' }), 404, 'updateState');
		await expectHttpError(th.updateState(t.thread_id, { values: { z: 1 }, checkpointId: c1.checkpoint_id }), 404,
			'updateState fork');
		await expectHttpError(th.patchState(t.thread_id, { pwned: true }), 404, 'patchState');
		await expectHttpError(th.patchState({ configurable: { thread_id: t.thread_id } }, { pwned: true }), 404,
			'patchState config');
		await expectHttpError(th.getHistory(t.thread_id), 404, 'getHistory');
		await expectHttpError(th.getHistory(t.thread_id, { checkpoint: { checkpoint_id: c1.checkpoint_id } }), 404,
			'getHistory checkpoint');
		const gh = await raw(stack, 'GET', `/threads/${t.thread_id}/history`, { token: u2.token });
		assert.equal(gh.status, 404, gh.text);

		// User 1's checkpoint ids are meaningless on user 2's own thread.
		const mine = await th.create();
		await expectHttpError(th.getState(mine.thread_id, c1.checkpoint_id), 404, 'foreign checkpoint id');
		await expectHttpError(th.getState(mine.thread_id, { checkpoint_id: c1.checkpoint_id }), 404,
			'foreign checkpoint object');
		await expectHttpError(th.updateState(mine.thread_id, { values: { z: 1 }, checkpointId: c1.checkpoint_id }), 404,
			'fork from a foreign checkpoint');
		let leaked = [];
		try {
			leaked = await th.getHistory(mine.thread_id, { checkpoint: { checkpoint_id: c1.checkpoint_id } });
		} catch (err) {
			assert.equal(err.status, 404, err.message);
		}
		assert.deepEqual(leaked, [], 'history from a foreign checkpoint must show nothing');
		const mineState = await th.getState(mine.thread_id);
		assert.deepEqual(mineState.values, {});

		assert.deepEqual(await snapshot(u1.client, t.thread_id), before);
	});
});

// ---------------------------------------------------------------------
// Concurrency: races between users and lost writes
// ---------------------------------------------------------------------

describe('concurrent requests', () => {
	// Parallel requests per race: enough to overlap on the gateway's
	// pool and the thread-service's workers, small for a 2-core machine.
	const RACERS = 8;

	test('concurrent creates of one id by both users: exactly one wins, the rest get 409', async () => {
		const id = randomUUID();
		const rs = await Promise.all(Array.from({ length: RACERS }, (_, i) => {
			const u = i % 2 === 0 ? u1 : u2;
			return (raw(stack, 'POST', '/threads', {
				token: u.token, body: { thread_id: id, metadata: { racer: i } },
			}).then((r) => ({ r, u, i })));
		}));
		const winners = rs.filter(({ r }) => r.status === 200);
		const losers = rs.filter(({ r }) => r.status === 409);
		assert.equal(winners.length, 1, rs.map(({ r }) => r.status).join(','));
		assert.equal(losers.length, RACERS - 1, rs.map(({ r }) => r.status).join(','));
		const { u: winner, i } = winners[0];
		const loser = winner === u1 ? u2 : u1;
		const g = await winner.client.threads.get(id);
		assert.deepEqual(g.metadata, { racer: i, owner: winner.id });
		await expectHttpError(loser.client.threads.get(id), 404, 'the loser does not see it');
	});

	test('concurrent metadata updates lose no write', async () => {
		const t = await u1.client.threads.create({ metadata: { base: true } });
		const rs = await Promise.all(Array.from({ length: RACERS * 2 }, (_, i) => raw(stack, 'PATCH',
			`/threads/${t.thread_id}`, { token: u1.token, body: { metadata: { [`k${i}`]: i } } })));
		assert.deepEqual(rs.map((r) => r.status), rs.map(() => 200));
		const g = await u1.client.threads.get(t.thread_id);
		const want = { base: true, owner: u1.id };
		for (let i = 0; i < RACERS * 2; i++) {
			want[`k${i}`] = i;
		}
		assert.deepEqual(g.metadata, want);
	});

	test('concurrent updateState calls: every update kept, history one linear chain', async () => {
		const t = await u1.client.threads.create();
		const rs = await Promise.all(Array.from({ length: RACERS }, (_, i) => raw(stack, 'POST',
			`/threads/${t.thread_id}/state`, { token: u1.token, body: { values: { [`s${i}`]: i }, as_node: `n${i}` } })));
		assert.deepEqual(rs.map((r) => r.status), rs.map(() => 200));
		const s = await u1.client.threads.getState(t.thread_id);
		const want = {};
		for (let i = 0; i < RACERS; i++) {
			want[`s${i}`] = i;
		}
		assert.deepEqual(s.values, want, 'an update was lost (two updates built on the same parent)');
		const h = await u1.client.threads.getHistory(t.thread_id, { limit: 100 });
		assert.equal(h.length, RACERS);
		for (let k = 0; k + 1 < h.length; k++) {
			assert.equal(h[k].parent_checkpoint?.checkpoint_id, h[k + 1].checkpoint.checkpoint_id, `history link ${k}`);
		}
		assert.equal(h.at(-1).parent_checkpoint ?? null, null);
	});
});

// ---------------------------------------------------------------------
// Isolation, all together
// ---------------------------------------------------------------------

describe('isolation overall', () => {
	test('each user\'s unfiltered search and count show only their own threads', async () => {
		for (const u of [u1, u2]) {
			const all = [];
			for (let offset = 0; ; offset += 1000) {
				const page = await u.client.threads.search({ limit: 1000, offset });
				all.push(...page);
				if (page.length < 1000) {
					break;
				}
			}
			assert.ok(all.length > 0);
			for (const t of all) {
				assert.equal(t.metadata.owner, u.id, `a foreign thread in ${u.email}'s search`);
			}
			assert.equal(await u.client.threads.count(), all.length);
		}
	});
});
