// SPDX-License-Identifier: MIT
//
// Helpers shared by the issue-3 end-to-end suites (threads_api.test.mjs and
// http_errors.test.mjs): users with their own official-SDK client, raw HTTP
// calls for what the SDK hides (status codes, headers, empty bodies),
// assertions on SDK errors, timestamp parsing, and owner-isolation
// snapshots. The stack itself comes from ../harness.mjs; nothing here starts
// a process.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { Client } from '@langchain/langgraph-sdk';

// A canonical UUID (any version), lower-case as the gateway emits it.
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// A UUIDv7 (what the server generates when no thread_id is given).
export const UUID7_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
// ISO-8601 date-time with an explicit numeric UTC offset, as the Python
// server emits it (e.g. 2024-07-18T18:35:15.540834+00:00).
export const ISO_OFFSET_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?[+-]\d{2}:\d{2}$/;

// Per-request timeout of the raw calls: far above any healthy answer on a
// loaded 2-core machine, low enough that a hung gateway fails the test.
const RAW_TIMEOUT_MS = 15000;
// Upper bound for clockPast(): the wall clock must pass a server timestamp
// within this time or the server's clock is not ours.
const CLOCK_WAIT_MS = 2000;

/** A fresh, unique e-mail address for a test user. */
export function uniqueEmail(label) {
	return (`${label}-${randomUUID().slice(0, 8)}@example.com`);
}

/** client(gatewayUrl, token): the official JS SDK client for one user. */
export function sdkClient(gatewayUrl, token) {
	return (new Client({
		apiUrl: gatewayUrl,
		apiKey: null,
		defaultHeaders: { Authorization: `Bearer ${token}` },
	}));
}

/**
 * newUser(stack, label): signs a new user up at the dev IdP and returns
 * { id, email, token, client }.
 */
export async function newUser(stack, label) {
	const email = uniqueEmail(label);
	const s = await stack.signup(email, 'correct-horse-battery-1');
	assert.equal(typeof s.access_token, 'string');
	assert.equal(typeof s.user?.id, 'string');
	return ({ id: s.user.id, email, token: s.access_token, client: sdkClient(stack.gatewayUrl, s.access_token) });
}

/**
 * raw(stack, method, path, opts) → { status, headers, text, json }.
 *   opts.token: bearer token (omitted: no Authorization header).
 *   opts.headers: more headers. opts.body: an object/array/number is sent
 *   as JSON with Content-Type application/json; a string or Buffer is sent
 *   as is (a string body gets fetch's text/plain, a Buffer none at all
 *   unless opts.headers says so).
 */
export async function raw(stack, method, path, { token, headers = {}, body } = {}) {
	const h = { ...headers };
	if (token !== undefined && token !== null) {
		h.Authorization = `Bearer ${token}`;
	}
	const init = { method, headers: h, signal: AbortSignal.timeout(RAW_TIMEOUT_MS) };
	if (body !== undefined) {
		if (typeof body === 'string' || Buffer.isBuffer(body)) {
			init.body = body;
		} else {
			init.body = JSON.stringify(body);
			if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) {
				h['Content-Type'] = 'application/json';
			}
		}
	}
	const res = await fetch(`${stack.gatewayUrl}${path}`, init);
	const text = await res.text();
	let json;
	try {
		json = JSON.parse(text);
	} catch {
		json = undefined;
	}
	return ({ status: res.status, headers: res.headers, text, json });
}

/**
 * rawHttp(url, method, path, headerPairs, body) → { status, headers, text,
 * json } with node:http on a fresh connection (no keep-alive pool), so a
 * header can be sent twice (fetch merges duplicates) and a request the
 * server cuts short (an oversized body answered early) cannot poison a
 * pooled connection. headerPairs is a list of [name, value]; repeated
 * names are sent as separate header lines. headers is a fetch-style
 * Headers object. The promise resolves as soon as a complete response has
 * arrived, even if writing the rest of the body then fails.
 */
export function rawHttp(gatewayUrl, method, path, headerPairs, body = null) {
	const u = new URL(gatewayUrl);
	return (new Promise((resolve, reject) => {
		let answered = false;
		const req = http.request({
			host: u.hostname,
			port: u.port,
			method,
			path,
			agent: false,
			timeout: RAW_TIMEOUT_MS,
		});
		const grouped = new Map();
		for (const [k, v] of headerPairs) {
			const key = k.toLowerCase();
			if (!grouped.has(key)) {
				grouped.set(key, { name: k, values: [] });
			}
			grouped.get(key).values.push(v);
		}
		for (const { name, values } of grouped.values()) {
			req.setHeader(name, values.length === 1 ? values[0] : values);
		}
		req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in ${RAW_TIMEOUT_MS} ms`)));
		req.on('error', (err) => {
			if (!answered) {
				reject(err);
			}
		});
		req.on('response', (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => {
				answered = true;
				const headers = new Headers();
				for (const [k, v] of Object.entries(res.headers)) {
					for (const one of Array.isArray(v) ? v : [v]) {
						headers.append(k, one);
					}
				}
				const text = Buffer.concat(chunks).toString('utf8');
				let json;
				try {
					json = JSON.parse(text);
				} catch {
					json = undefined;
				}
				resolve({ status: res.statusCode, headers, text, json });
			});
			res.on('error', (err) => {
				if (!answered) {
					reject(err);
				}
			});
		});
		if (body !== null) {
			req.setHeader('Content-Length', Buffer.byteLength(body));
			req.end(body);
		} else {
			req.end();
		}
	}));
}

/**
 * expectHttpError(promise, status): the SDK call must fail with HTTPError
 * of exactly that status. Returns the error.
 */
export async function expectHttpError(promise, status, what = '') {
	let caught = null;
	try {
		const v = await promise;
		assert.fail(`${what}: expected HTTP ${status}, but the call succeeded with ${JSON.stringify(v)?.slice(0, 300)}`);
	} catch (err) {
		if (err instanceof assert.AssertionError) {
			throw err;
		}
		caught = err;
	}
	assert.equal(caught.status, status,
		`${what}: expected HTTP ${status}, got ${caught.status ?? 'no status'}: ${caught.message}`);
	return (caught);
}

/**
 * isoMicros(s): microseconds since the epoch of an ISO-8601 timestamp,
 * keeping sub-millisecond digits (Date.parse drops them).
 */
export function isoMicros(s) {
	const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/.exec(s);
	assert.ok(m, `not an ISO-8601 timestamp: ${s}`);
	const secMs = Date.parse(`${m[1]}${m[3]}`);
	assert.ok(Number.isFinite(secMs), `unparseable timestamp: ${s}`);
	const frac = Number((m[2] ?? '').padEnd(6, '0').slice(0, 6));
	return (secMs * 1000 + frac);
}

/** assertIso(s, what): s is ISO-8601 with offset and within a day of now. */
export function assertIso(s, what) {
	assert.equal(typeof s, 'string', `${what}: not a string: ${JSON.stringify(s)}`);
	assert.match(s, ISO_OFFSET_RE, `${what}: not ISO-8601 with a numeric offset: ${s}`);
	const ms = isoMicros(s) / 1000;
	assert.ok(Math.abs(ms - Date.now()) < 24 * 3600 * 1000, `${what}: ${s} is not near now`);
}

/**
 * clockPast(iso): resolves once this machine's clock is past the given
 * server timestamp by at least one millisecond, so that a following write
 * must get a strictly later timestamp. Bounded by CLOCK_WAIT_MS.
 */
export async function clockPast(iso) {
	const target = Math.floor(isoMicros(iso) / 1000) + 1;
	const deadline = Date.now() + CLOCK_WAIT_MS;
	while (Date.now() <= target) {
		assert.ok(Date.now() < deadline, `clock did not pass ${iso} within ${CLOCK_WAIT_MS} ms`);
		await new Promise((r) => setTimeout(r, 1));
	}
}

/** assertThreadShape(t, ownerId): the Thread object of reference §2. */
export function assertThreadShape(t, ownerId, what = 'thread') {
	assert.equal(typeof t, 'object', `${what}: not an object`);
	assert.match(t.thread_id, UUID_RE, `${what}.thread_id`);
	assertIso(t.created_at, `${what}.created_at`);
	assertIso(t.updated_at, `${what}.updated_at`);
	assert.equal(typeof t.metadata, 'object', `${what}.metadata`);
	assert.ok(t.metadata !== null && !Array.isArray(t.metadata), `${what}.metadata must be an object`);
	assert.equal(t.metadata.owner, ownerId, `${what}.metadata.owner`);
	assert.ok(['idle', 'busy', 'interrupted', 'error'].includes(t.status), `${what}.status ${t.status}`);
}

/**
 * snapshot(client, threadId): everything the owner can read about a
 * thread, to prove a foreign request changed nothing.
 */
export async function snapshot(c, threadId) {
	const thread = await c.threads.get(threadId);
	const state = await c.threads.getState(threadId);
	const history = await c.threads.getHistory(threadId, { limit: 1000 });
	return ({ thread, state, history });
}

/** ids(list): the thread ids of a list of threads. */
export function ids(list) {
	return (list.map((t) => t.thread_id));
}

/** sorted(a): a sorted copy. */
export function sorted(a) {
	return ([...a].sort());
}
