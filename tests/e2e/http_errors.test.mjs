// SPDX-License-Identifier: MIT
//
// Issue 3, HTTP level: a table of error cases sent with Node's fetch to the
// real stack (../harness.mjs). Every row asserts the status code, the
// Content-Type application/json, a JSON body {"detail": "<text>"} whose
// text matches the row, an x-request-id, and any extra header the row
// names (Allow, WWW-Authenticate). Cases fetch cannot express (two
// Authorization headers) go over node:http. A second table sends filter
// keys built to break a SQL/JSON-path implementation: they must match
// nothing (or be refused with 422), never answer 500 or a wrong thread.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startStack } from './harness.mjs';
import { newUser, raw, rawHttp } from './lib/threads_util.mjs';

// The gateway's default body limit (GATEWAY_MAX_BODY, 1 MiB).
const MAX_BODY = 1048576;

let stack;
let u1;
let u2;
// User 1's thread (with a checkpoint), user 2's thread.
let t1;
let t2;
let cp1;

before(async () => {
	stack = await startStack();
	u1 = await newUser(stack, 'errors-u1');
	u2 = await newUser(stack, 'errors-u2');
	t1 = await u1.client.threads.create({ metadata: { a: { b: 1 }, c: 1, tag: 'target' } });
	cp1 = (await u1.client.threads.updateState(t1.thread_id, { values: { a: { b: 1 }, c: 1 } })).checkpoint;
	t2 = await u2.client.threads.create({ metadata: { mine: true } });
});

after(async () => {
	if (stack) {
		await stack.stop();
	}
});

// A JSON body of exactly `size` bytes: {"metadata":{"pad":"xxx…"}}.
function bodyOfSize(size) {
	const head = '{"metadata":{"pad":"';
	const tail = '"}}';
	return (head + 'x'.repeat(size - head.length - tail.length) + tail);
}

// Row fields: name, method, path (string or ctx => string), as ('u1', 'u2',
// 'none', or { token }), headers, body (object → JSON; string → sent as is
// with Content-Type application/json unless headers say otherwise), status,
// detail (regex on body.detail), expectHeaders { name: regex }.
function rows() {
	const M = randomUUID();
	const T1 = t1.thread_id;
	const T2 = t2.thread_id;
	const jsonCt = { 'Content-Type': 'application/json' };
	const notFound = /not found/i;
	const conflict = /exist|conflict/i;
	const uuid = /uuid/i;
	const badJson = /json/i;
	return ([
		// Missing and foreign threads: 404 on read/update/delete/state/history.
		{ name: 'GET missing thread', method: 'GET', path: `/threads/${M}`, status: 404, detail: notFound },
		{ name: 'GET foreign thread', method: 'GET', path: `/threads/${T1}`, as: 'u2', status: 404, detail: notFound },
		{ name: 'PATCH missing thread', method: 'PATCH', path: `/threads/${M}`, body: { metadata: {} }, status: 404, detail: notFound },
		{ name: 'PATCH foreign thread', method: 'PATCH', path: `/threads/${T1}`, as: 'u2', body: { metadata: { x: 1 } }, status: 404, detail: notFound },
		{ name: 'PATCH foreign thread, return=minimal', method: 'PATCH', path: `/threads/${T1}`, as: 'u2',
			headers: { Prefer: 'return=minimal' }, body: { metadata: { x: 1 } }, status: 404, detail: notFound },
		{ name: 'DELETE missing thread', method: 'DELETE', path: `/threads/${M}`, status: 404, detail: notFound },
		{ name: 'DELETE foreign thread', method: 'DELETE', path: `/threads/${T1}`, as: 'u2', status: 404, detail: notFound },
		{ name: 'GET state of missing thread', method: 'GET', path: `/threads/${M}/state`, status: 404, detail: notFound },
		{ name: 'GET state of foreign thread', method: 'GET', path: `/threads/${T1}/state`, as: 'u2', status: 404, detail: notFound },
		{ name: 'GET state at foreign checkpoint', method: 'GET', path: `/threads/${T1}/state/${cp1.checkpoint_id}`, as: 'u2',
			status: 404, detail: notFound },
		{ name: 'GET state at missing checkpoint', method: 'GET', path: `/threads/${T1}/state/${M}`, status: 404, detail: notFound },
		{ name: 'POST state/checkpoint of foreign thread', method: 'POST', path: `/threads/${T1}/state/checkpoint`, as: 'u2',
			body: { checkpoint: { checkpoint_id: cp1.checkpoint_id } }, status: 404, detail: notFound },
		{ name: 'POST state of missing thread', method: 'POST', path: `/threads/${M}/state`, body: { values: { a: 1 } },
			status: 404, detail: notFound },
		{ name: 'POST state of foreign thread', method: 'POST', path: `/threads/${T1}/state`, as: 'u2',
			body: { values: { a: 1 } }, status: 404, detail: notFound },
		{ name: 'PATCH state of foreign thread', method: 'PATCH', path: `/threads/${T1}/state`, as: 'u2',
			body: { metadata: { x: 1 } }, status: 404, detail: notFound },
		{ name: 'POST history of missing thread', method: 'POST', path: `/threads/${M}/history`, body: { limit: 10 },
			status: 404, detail: notFound },
		{ name: 'POST history of foreign thread', method: 'POST', path: `/threads/${T1}/history`, as: 'u2',
			body: { limit: 10 }, status: 404, detail: notFound },
		{ name: 'GET history of foreign thread', method: 'GET', path: `/threads/${T1}/history`, as: 'u2', status: 404, detail: notFound },

		// Conflicts: create with a taken id, copy of a missing/foreign source.
		{ name: 'create with own existing id', method: 'POST', path: '/threads', body: { thread_id: T1 }, status: 409, detail: conflict },
		{ name: 'create with own existing id, if_exists raise', method: 'POST', path: '/threads',
			body: { thread_id: T1, if_exists: 'raise' }, status: 409, detail: conflict },
		{ name: 'create with foreign id', method: 'POST', path: '/threads', as: 'u2', body: { thread_id: T1 }, status: 409, detail: conflict },
		{ name: 'create with foreign id, do_nothing', method: 'POST', path: '/threads', as: 'u2',
			body: { thread_id: T1, if_exists: 'do_nothing' }, status: 409, detail: conflict },
		{ name: 'copy of missing thread', method: 'POST', path: `/threads/${M}/copy`, status: 409, detail: /./ },
		{ name: 'copy of foreign thread', method: 'POST', path: `/threads/${T1}/copy`, as: 'u2', status: 409, detail: /./ },

		// Invalid UUIDs in the path.
		{ name: 'GET invalid UUID', method: 'GET', path: '/threads/not-a-uuid', status: 422, detail: uuid },
		{ name: 'GET almost-UUID', method: 'GET', path: `/threads/${M.slice(0, -1)}g`, status: 422, detail: uuid },
		{ name: 'PATCH invalid UUID', method: 'PATCH', path: '/threads/123', body: { metadata: {} }, status: 422, detail: uuid },
		{ name: 'DELETE invalid UUID', method: 'DELETE', path: '/threads/xyz', status: 422, detail: uuid },
		{ name: 'GET state invalid UUID', method: 'GET', path: '/threads/xyz/state', status: 422, detail: uuid },
		{ name: 'POST copy invalid UUID', method: 'POST', path: '/threads/xyz/copy', status: 422, detail: uuid },
		{ name: 'POST history invalid UUID', method: 'POST', path: '/threads/xyz/history', body: {}, status: 422, detail: uuid },
		{ name: 'SQL in the path', method: 'GET', path: `/threads/${encodeURIComponent("' OR 1=1 --")}`, status: 422, detail: uuid },
		{ name: 'create with invalid thread_id', method: 'POST', path: '/threads', body: { thread_id: 'nope' }, status: 422, detail: uuid },

		// Invalid JSON and bodies that are not objects.
		{ name: 'create invalid JSON', method: 'POST', path: '/threads', headers: jsonCt, body: '{"metadata":', status: 422, detail: badJson },
		{ name: 'search invalid JSON', method: 'POST', path: '/threads/search', headers: jsonCt, body: '{limit: 1}', status: 422, detail: badJson },
		{ name: 'PATCH invalid JSON', method: 'PATCH', path: `/threads/${T1}`, headers: jsonCt, body: '{"metadata":{}', status: 422, detail: badJson },
		{ name: 'update_state invalid JSON', method: 'POST', path: `/threads/${T1}/state`, headers: jsonCt, body: 'nul', status: 422, detail: badJson },
		{ name: 'invalid UTF-8 in JSON', method: 'POST', path: '/threads', headers: jsonCt,
			body: Buffer.from([0x7b, 0x22, 0x6d, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), status: 422, detail: /./ },
		{ name: 'create body is null', method: 'POST', path: '/threads', headers: jsonCt, body: 'null', status: 422, detail: /object/i },
		{ name: 'JSON nested 5000 deep', method: 'POST', path: '/threads', headers: jsonCt,
			body: `{"metadata":${'{"a":'.repeat(5000)}1${'}'.repeat(5001)}`, status: 422, detail: /./ },
		{ name: 'trailing garbage after JSON', method: 'POST', path: '/threads', headers: jsonCt, body: '{} x', status: 422, detail: badJson },
		{ name: 'create body is an array', method: 'POST', path: '/threads', body: [], status: 422, detail: /object/i },
		{ name: 'create body is a string', method: 'POST', path: '/threads', headers: jsonCt, body: '"x"', status: 422, detail: /object/i },
		{ name: 'search body is a number', method: 'POST', path: '/threads/search', headers: jsonCt, body: '7', status: 422, detail: /object/i },
		{ name: 'PATCH body is an array', method: 'PATCH', path: `/threads/${T1}`, body: [1], status: 422, detail: /object/i },

		// Field validation.
		{ name: 'limit 0', method: 'POST', path: '/threads/search', body: { limit: 0 }, status: 422, detail: /limit/i },
		{ name: 'limit 1001', method: 'POST', path: '/threads/search', body: { limit: 1001 }, status: 422, detail: /limit/i },
		{ name: 'limit "10"', method: 'POST', path: '/threads/search', body: { limit: '10' }, status: 422, detail: /limit/i },
		{ name: 'limit -1', method: 'POST', path: '/threads/search', body: { limit: -1 }, status: 422, detail: /limit/i },
		{ name: 'limit 1.5', method: 'POST', path: '/threads/search', body: { limit: 1.5 }, status: 422, detail: /limit/i },
		{ name: 'offset -1', method: 'POST', path: '/threads/search', body: { offset: -1 }, status: 422, detail: /offset/i },
		{ name: 'offset "0"', method: 'POST', path: '/threads/search', body: { offset: '0' }, status: 422, detail: /offset/i },
		{ name: 'history limit 0', method: 'POST', path: `/threads/${T1}/history`, body: { limit: 0 }, status: 422, detail: /limit/i },
		{ name: 'history GET limit not a number', method: 'GET', path: `/threads/${T1}/history?limit=ten`, status: 422, detail: /limit/i },
		{ name: 'unknown select key', method: 'POST', path: '/threads/search', body: { select: ['thread_id', 'bogus'] },
			status: 422, detail: /select|bogus/i },
		{ name: 'select not a list', method: 'POST', path: '/threads/search', body: { select: 'thread_id' }, status: 422, detail: /select/i },
		{ name: 'unknown sort_by', method: 'POST', path: '/threads/search', body: { sort_by: 'owner' }, status: 422, detail: /sort/i },
		{ name: 'unknown sort_order', method: 'POST', path: '/threads/search', body: { sort_order: 'sideways' }, status: 422, detail: /sort/i },
		{ name: 'unknown status', method: 'POST', path: '/threads/search', body: { status: 'sleepy' }, status: 422, detail: /status/i },
		{ name: 'create metadata is an array', method: 'POST', path: '/threads', body: { metadata: [] }, status: 422, detail: /metadata/i },
		{ name: 'create metadata is a string', method: 'POST', path: '/threads', body: { metadata: 'x' }, status: 422, detail: /metadata/i },
		{ name: 'PATCH metadata is a number', method: 'PATCH', path: `/threads/${T1}`, body: { metadata: 5 }, status: 422, detail: /metadata/i },
		{ name: 'search metadata is an array', method: 'POST', path: '/threads/search', body: { metadata: [1] }, status: 422, detail: /metadata/i },
		{ name: 'count metadata is a string', method: 'POST', path: '/threads/count', body: { metadata: 's' }, status: 422, detail: /metadata/i },
		{ name: 'search values is a string', method: 'POST', path: '/threads/search', body: { values: 'v' }, status: 422, detail: /values/i },
		{ name: 'negative ttl', method: 'POST', path: '/threads', body: { ttl: -1 }, status: 422, detail: /ttl/i },
		{ name: 'ttl with unknown strategy', method: 'POST', path: '/threads', body: { ttl: { ttl: 5, strategy: 'explode' } },
			status: 422, detail: /ttl|strategy/i },
		{ name: 'supersteps not a list', method: 'POST', path: '/threads', body: { supersteps: 'x' }, status: 422, detail: /supersteps/i },
		{ name: 'superstep updates not a list', method: 'POST', path: '/threads', body: { supersteps: [{ updates: 'x' }] },
			status: 422, detail: /supersteps|updates/i },
		{ name: 'update_state values a string', method: 'POST', path: `/threads/${T1}/state`, body: { values: 'x' },
			status: 422, detail: /values/i },
		{ name: 'update_state values a list of numbers', method: 'POST', path: `/threads/${T1}/state`, body: { values: [1] },
			status: 422, detail: /values/i },
		{ name: 'update_state as_node a number', method: 'POST', path: `/threads/${T1}/state`, body: { values: {}, as_node: 5 },
			status: 422, detail: /as_node/i },
		{ name: 'update_state checkpoint_id not a UUID', method: 'POST', path: `/threads/${T1}/state`,
			body: { values: {}, checkpoint_id: 'x' }, status: 422, detail: /checkpoint/i },
		{ name: 'patch_state metadata a list', method: 'PATCH', path: `/threads/${T1}/state`, body: { metadata: [1] },
			status: 422, detail: /metadata/i },
		{ name: 'state at a non-UUID checkpoint', method: 'GET', path: `/threads/${T1}/state/not-a-uuid`, status: 422,
			detail: /uuid/i },
		{ name: 'unknown if_exists', method: 'POST', path: '/threads', body: { if_exists: 'sometimes' }, status: 422, detail: /if_exists/i },
		{ name: 'search ids not a list', method: 'POST', path: '/threads/search', body: { ids: T1 }, status: 422, detail: /ids/i },
		{ name: 'prune thread_ids not a list', method: 'POST', path: '/threads/prune', body: { thread_ids: T1 }, status: 422,
			detail: /thread_ids/i },
		{ name: 'prune unknown strategy', method: 'POST', path: '/threads/prune', body: { thread_ids: [T1], strategy: 'shred' },
			status: 422, detail: /strategy/i },

		// Size limit.
		// (on a fresh connection: the server may answer before reading it all)
		{ name: 'body one byte over the limit', method: 'POST', path: '/threads', headers: jsonCt, body: bodyOfSize(MAX_BODY + 1),
			status: 413, detail: /large|limit|size|big/i, fresh: true },
		{ name: 'body far over the limit', method: 'POST', path: '/threads/search', headers: jsonCt, body: bodyOfSize(4 * MAX_BODY),
			status: 413, detail: /large|limit|size|big/i, fresh: true },

		// Routing.
		{ name: 'unknown route', method: 'GET', path: '/nope', status: 404, detail: /./ },
		{ name: 'unknown sub-route', method: 'GET', path: `/threads/${T1}/nope`, status: 404, detail: /./ },
		{ name: 'PUT /threads', method: 'PUT', path: '/threads', body: {}, status: 405, detail: /./,
			expectHeaders: { allow: /\bPOST\b/ } },
		{ name: 'GET /threads', method: 'GET', path: '/threads', status: 405, detail: /./,
			expectHeaders: { allow: /\bPOST\b/ } },
		{ name: 'PUT /threads/{id}', method: 'PUT', path: `/threads/${T1}`, body: {}, status: 405, detail: /./,
			expectHeaders: { allow: /(?=.*\bGET\b)(?=.*\bPATCH\b)(?=.*\bDELETE\b)/ } },
		{ name: 'DELETE /threads/{id}/copy', method: 'DELETE', path: `/threads/${T1}/copy`, status: 405, detail: /./,
			expectHeaders: { allow: /\bPOST\b/ } },

		// Authentication.
		{ name: 'no token', method: 'GET', path: `/threads/${T1}`, as: 'none', status: 401, detail: /./,
			expectHeaders: { 'www-authenticate': /^Bearer\b/ } },
		{ name: 'no token on search', method: 'POST', path: '/threads/search', as: 'none', body: {}, status: 401, detail: /./,
			expectHeaders: { 'www-authenticate': /^Bearer\b/ } },
		{ name: 'garbage token', method: 'GET', path: `/threads/${T1}`, as: { token: 'garbage.not-a.jwt' }, status: 401,
			detail: /./, expectHeaders: { 'www-authenticate': /^Bearer\b.*error="invalid_token"/ } },
		{ name: 'garbage token on create', method: 'POST', path: '/threads', as: { token: 'x'.repeat(200) }, body: {}, status: 401,
			detail: /./, expectHeaders: { 'www-authenticate': /^Bearer\b.*error="invalid_token"/ } },
		{ name: 'Basic instead of Bearer', method: 'GET', path: `/threads/${T1}`, as: 'none',
			headers: { Authorization: 'Basic dXNlcjpwYXNz' }, status: 401, detail: /./, expectHeaders: { 'www-authenticate': /^Bearer\b/ } },
		{ name: 'Bearer without a token', method: 'GET', path: `/threads/${T1}`, as: 'none',
			headers: { Authorization: 'Bearer ' }, status: 401, detail: /./, expectHeaders: { 'www-authenticate': /^Bearer\b/ } },
	]);
}

function tokenFor(as) {
	if (as === undefined || as === 'u1') {
		return (u1.token);
	}
	if (as === 'u2') {
		return (u2.token);
	}
	if (as === 'none') {
		return (null);
	}
	return (as.token);
}

// The JSON error contract every error response must meet.
function assertErrorResponse(r, row) {
	const what = `${row.name}: ${row.method} ${row.path.slice(0, 120)}`;
	assert.equal(r.status, row.status, `${what}: status ${r.status}, body ${r.text.slice(0, 300)}`);
	assert.match(r.headers.get('content-type') ?? '', /^application\/json\b/, `${what}: Content-Type`);
	assert.ok(r.json !== undefined && r.json !== null && typeof r.json === 'object' && !Array.isArray(r.json),
		`${what}: body is not a JSON object: ${r.text.slice(0, 300)}`);
	assert.equal(typeof r.json.detail, 'string', `${what}: no string "detail": ${r.text.slice(0, 300)}`);
	assert.match(r.json.detail, row.detail, `${what}: detail`);
	assert.ok((r.headers.get('x-request-id') ?? '').length > 0, `${what}: no x-request-id`);
	for (const [name, re] of Object.entries(row.expectHeaders ?? {})) {
		assert.match(r.headers.get(name) ?? '', re, `${what}: header ${name}`);
	}
}

describe('HTTP error table', () => {
	test('every row: status, application/json, {"detail"}, headers', async (t) => {
		for (const row of rows()) {
			await t.test(row.name, async () => {
				let body = row.body;
				const headers = { ...(row.headers ?? {}) };
				if (Buffer.isBuffer(body) || typeof body === 'string') {
					// Sent as is; the row's headers carry the Content-Type.
				} else if (body !== undefined) {
					body = JSON.stringify(body);
					headers['Content-Type'] = 'application/json';
				}
				const token = tokenFor(row.as);
				let r;
				if (row.fresh) {
					const pairs = Object.entries(headers);
					if (token !== null) {
						pairs.push(['Authorization', `Bearer ${token}`]);
					}
					r = await rawHttp(stack.gatewayUrl, row.method, row.path, pairs, body ?? null);
				} else {
					r = await raw(stack, row.method, row.path, { token, headers, body });
				}
				assertErrorResponse(r, row);
			});
		}
	});

	test('a foreign thread and a missing thread get the same 404 text', async () => {
		const missing = randomUUID();
		const pairs = [
			['GET', (id) => `/threads/${id}`, undefined],
			['PATCH', (id) => `/threads/${id}`, { metadata: { x: 1 } }],
			['DELETE', (id) => `/threads/${id}`, undefined],
			['GET', (id) => `/threads/${id}/state`, undefined],
			['POST', (id) => `/threads/${id}/state`, { values: { a: 1 } }],
			['POST', (id) => `/threads/${id}/history`, { limit: 10 }],
		];
		for (const [method, path, body] of pairs) {
			const a = await raw(stack, method, path(missing), { token: u2.token, body });
			const b = await raw(stack, method, path(t1.thread_id), { token: u2.token, body });
			assert.equal(a.status, 404, `${method} missing: ${a.text}`);
			assert.equal(b.status, 404, `${method} foreign: ${b.text}`);
			const norm = (r, id) => String(r.json?.detail).split(id).join('<id>');
			assert.equal(norm(b, t1.thread_id), norm(a, missing), `${method} ${path('<id>')}: texts differ`);
		}
		// Copy: the same 409 for missing and foreign.
		const ca = await raw(stack, 'POST', `/threads/${missing}/copy`, { token: u2.token });
		const cb = await raw(stack, 'POST', `/threads/${t1.thread_id}/copy`, { token: u2.token });
		assert.equal(ca.status, 409, ca.text);
		assert.equal(cb.status, 409, cb.text);
		assert.equal(String(cb.json?.detail).split(t1.thread_id).join('<id>'),
			String(ca.json?.detail).split(missing).join('<id>'));
	});

	test('a body exactly at the limit is not refused for its size', async () => {
		const r = await raw(stack, 'POST', '/threads', {
			token: u1.token, headers: { 'Content-Type': 'application/json' }, body: bodyOfSize(MAX_BODY),
		});
		assert.equal(r.status, 200, r.text.slice(0, 300));
		assert.equal(r.json.metadata.pad.length, MAX_BODY - '{"metadata":{"pad":""}}'.length);
		assert.equal(r.json.metadata.owner, u1.id);
	});

	test('two Authorization headers → 401 (sent raw: fetch would merge them)', async () => {
		const combos = [
			['user 1 then user 2', [u1.token, u2.token]],
			['user 2 then user 1', [u2.token, u1.token]],
			['the same valid token twice', [u1.token, u1.token]],
		];
		for (const [name, [a, b]] of combos) {
			const r = await rawHttp(stack.gatewayUrl, 'GET', `/threads/${t1.thread_id}`, [
				['Authorization', `Bearer ${a}`],
				['Authorization', `Bearer ${b}`],
			]);
			assert.equal(r.status, 401, `${name}: HTTP ${r.status}: ${r.text.slice(0, 300)}`);
			assert.match(r.headers.get('content-type') ?? '', /^application\/json\b/, name);
			assert.equal(typeof r.json?.detail, 'string', name);
			assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer\b/, name);
			assert.ok((r.headers.get('x-request-id') ?? '').length > 0, `${name}: no x-request-id`);
			assert.doesNotMatch(r.text, /target/, `${name}: leaked the thread`);
		}
		// The same request with one header works, so the 401 above is about
		// the duplicate and nothing else.
		const ok = await rawHttp(stack.gatewayUrl, 'GET', `/threads/${t1.thread_id}`, [['Authorization', `Bearer ${u1.token}`]]);
		assert.equal(ok.status, 200, ok.text);
	});

	test('client-sent identity headers do not change who the caller is', async () => {
		// Whatever a client claims in headers, user 2 stays user 2.
		const r = await raw(stack, 'GET', `/threads/${t1.thread_id}`, {
			token: u2.token,
			headers: {
				'X-User-Id': u1.id, 'X-Owner': u1.id, 'X-Identity': u1.id, 'X-Auth-Identity': u1.id,
				'X-Forwarded-User': u1.id, 'X-Auth-Scheme': 'langsmith',
			},
		});
		assert.equal(r.status, 404, r.text);
	});
});

describe('filter keys that try to escape the JSON path or the SQL', () => {
	// Keys that a path-pasting or string-pasting implementation would turn
	// into a match on a.b / c / owner, into a JSON-path error, or into SQL.
	const keys = [
		'a.b', '$.a.b', '$', '$.c', 'a"."b', "a'.'b", '"a"."b"', 'a[0]', 'a.*', '*', '**', 'c\'', 'c"',
		"c' OR '1'='1", 'c") OR 1=1 --', "owner') OR 1=1 --", 'c; DROP TABLE threads; --', '\\c', 'c\u0000',
		'', ' c', 'C', 'owner.x', 'tag"', '$[0]',
	];
	for (const where of ['metadata', 'values']) {
		test(`${where}: every odd key answers 200 [] (or 422), never 500 or a wrong match`, async () => {
			for (const key of keys) {
				for (const value of [1, 'target', { b: 1 }]) {
					const filter = { [key]: value };
					const s = await raw(stack, 'POST', '/threads/search', { token: u1.token, body: { [where]: filter } });
					const what = `${where} ${JSON.stringify(filter)}`;
					assert.ok(s.status === 200 || s.status === 422, `${what}: HTTP ${s.status}: ${s.text.slice(0, 300)}`);
					if (s.status === 200) {
						assert.deepEqual(s.json, [], `${what} matched wrongly`);
					} else {
						assert.equal(typeof s.json?.detail, 'string', `${what}: 422 without detail`);
					}
					const c = await raw(stack, 'POST', '/threads/count', { token: u1.token, body: { [where]: filter } });
					assert.ok(c.status === 200 || c.status === 422, `count ${what}: HTTP ${c.status}: ${c.text.slice(0, 300)}`);
					if (c.status === 200) {
						assert.equal(c.json, 0, `count ${what} counted wrongly`);
					}
				}
			}
			// Values inside a filter are data, not SQL: SQL text as a value.
			for (const value of ["' OR '1'='1", '1 OR 1=1', '%', '_', '"}', null]) {
				const s = await raw(stack, 'POST', '/threads/search', { token: u1.token, body: { [where]: { tag: value } } });
				assert.equal(s.status, 200, `${where} tag=${JSON.stringify(value)}: ${s.text.slice(0, 300)}`);
				assert.deepEqual(s.json, [], `${where} tag=${JSON.stringify(value)} matched`);
			}
			// The real keys still match (the table above did not only pass
			// because search is broken).
			const real = where === 'metadata' ? { a: { b: 1 }, tag: 'target' } : { a: { b: 1 }, c: 1 };
			const s = await raw(stack, 'POST', '/threads/search', { token: u1.token, body: { [where]: real } });
			assert.equal(s.status, 200, s.text);
			assert.deepEqual(s.json.map((x) => x.thread_id), [t1.thread_id]);
			// And user 2 cannot reach user 1's thread with them.
			const s2 = await raw(stack, 'POST', '/threads/search', { token: u2.token, body: { [where]: real } });
			assert.equal(s2.status, 200, s2.text);
			assert.deepEqual(s2.json, []);
		});
	}

	test('history metadata filter with odd keys answers 200 [] (or 422)', async () => {
		for (const key of ['source"', '$.source', 'writes.x', "x' OR 1=1 --", '']) {
			const r = await raw(stack, 'POST', `/threads/${t1.thread_id}/history`, {
				token: u1.token, body: { limit: 10, metadata: { [key]: 'update' } },
			});
			assert.ok(r.status === 200 || r.status === 422, `${key}: HTTP ${r.status}: ${r.text.slice(0, 300)}`);
			if (r.status === 200) {
				assert.deepEqual(r.json, [], `history key ${key} matched`);
			}
		}
	});
});
