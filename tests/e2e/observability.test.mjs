// SPDX-License-Identifier: MIT
//
// Issue 8, sections 3-5, against the real binaries (../harness.mjs):
//  - metrics: each service's METRICS_ADDR endpoint passes Debian's
//    `promtool check metrics`, and a real Prometheus server (Debian's
//    package; random free port, temporary directory, 500 ms scrape
//    interval) scrapes the stack and answers /api/v1/query for a series of
//    each service: the gateway's requests, the auth-service's outcomes, and
//    the thread-service's rpc-layer metrics and process metrics (which the
//    rpc layer serves without any thread-service code);
//  - readiness: /ready is 200 with both upstreams, 503 naming the one that
//    was killed, 200 again after it restarts; SIGTERM turns /ready 503 while
//    the gateway still serves, then it exits 0; --health-check exit codes
//    (gateway and auth-service, serving or not; auth in jwt mode is not
//    serving until it has a signing key);
//  - logs: the access line (method, real path with ids and without the
//    query, status, duration, owner or "-", rid, trace id), text vs JSON,
//    an auth refusal's reason at info with the rid, the X-Request-Id
//    reaching the dev IdP's log, and the client's traceparent in the log
//    of every service.
// Skipped, with the reason, when Debian's prometheus package (promtool,
// prometheus) is not installed; scripts/deps.sh --test installs it.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { binPath, httpJson, readPortFile, startProcess, startStack, tmpDir, waitFor } from './harness.mjs';

const PROMTOOL = '/usr/bin/promtool';
const PROMETHEUS = '/usr/bin/prometheus';
const HAVE_PROM = fs.existsSync(PROMTOOL) && fs.existsSync(PROMETHEUS);
const SKIP_PROM = HAVE_PROM ? false
	: 'Debian\'s prometheus package is not installed (scripts/deps.sh --test installs it)';

// A valid W3C traceparent the client sends; its trace id must show up in
// every service's log.
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`;
// Bounded waits (the harness's start timeout covers sanitizer builds).
const WAIT_MS = 30000;
const POLL_MS = 50;

function sleep(ms) {
	return (new Promise((resolve) => setTimeout(resolve, ms)));
}

async function until(what, check, ms = WAIT_MS) {
	const deadline = Date.now() + ms;
	let last;
	for (;;) {
		try {
			last = await check();
			if (last) {
				return (last);
			}
		} catch (err) {
			last = err;
		}
		if (Date.now() > deadline) {
			throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
		}
		await sleep(POLL_MS);
	}
}

// Every JSON line of a log (lines that are not JSON are skipped).
function jsonLines(text) {
	const out = [];
	for (const line of text.split('\n')) {
		if (line.startsWith('{')) {
			try {
				out.push(JSON.parse(line));
			} catch {
				// a line cut by a concurrent write: not ours
			}
		}
	}
	return (out);
}

function freePort() {
	return (new Promise((resolve, reject) => {
		const s = net.createServer();
		s.once('error', reject);
		s.listen(0, '127.0.0.1', () => {
			const { port } = s.address();
			s.close(() => resolve(port));
		});
	}));
}

// Runs a program to completion: { code, stdout, stderr }.
function run(bin, args, { env = {}, input = null, timeoutMs = 20000 } = {}) {
	return (new Promise((resolve, reject) => {
		const child = spawn(bin, args, { env: { PATH: process.env.PATH, ...env } });
		let stdout = '';
		let stderr = '';
		const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
		child.stdout.on('data', (d) => { stdout += d; });
		child.stderr.on('data', (d) => { stderr += d; });
		child.on('error', reject);
		child.on('close', (code, signal) => {
			clearTimeout(timer);
			resolve({ code, signal, stdout, stderr });
		});
		if (input !== null) {
			child.stdin.end(input);
		} else {
			child.stdin.end();
		}
	}));
}

async function metricsText(port) {
	const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10000) });
	assert.equal(r.status, 200);
	assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
	return (r.text());
}

describe('observability of the running stack', () => {
	let stack;
	let dir;
	const mport = {};
	let user;
	let threadId;
	const rid = 'obs-e2e-create-1';

	before(async () => {
		dir = await tmpDir('tg-obs-');
		const m = (name) => ({
			METRICS_ADDR: '127.0.0.1:0',
			METRICS_PORT_FILE: path.join(dir, `${name}.mport`),
		});
		stack = await startStack({
			threadsEnv: { ...m('threads'), LOG_LEVEL: 'debug' },
			authEnv: { ...m('auth'), LOG_LEVEL: 'debug' },
			gatewayEnv: { ...m('gateway'), GATEWAY_READY_INTERVAL_MS: '100',
				GATEWAY_AUTH_TIMEOUT_MS: '1500', GATEWAY_THREADS_TIMEOUT_MS: '1500' },
		});
		for (const name of ['gateway', 'auth', 'threads']) {
			mport[name] = await readPortFile(path.join(dir, `${name}.mport`));
		}
		const s = await stack.signup('obs@example.com', 'correct-horse-battery');
		user = { token: s.access_token, id: s.user.id };
		const r = await httpJson('POST', `${stack.gatewayUrl}/threads?ignored=1`, {
			headers: { authorization: `Bearer ${user.token}`, 'x-request-id': rid, traceparent: TRACEPARENT },
			body: { metadata: { k: 'v' } },
		});
		assert.equal(r.status, 200, r.text);
		threadId = r.json.thread_id;
	});

	after(async () => {
		if (stack) {
			await stack.stop();
		}
	});

	test('the access line: method, real path without the query, status, duration, owner, rid, trace id', async () => {
		const r = await httpJson('GET', `${stack.gatewayUrl}/threads/${threadId}?select=x`, {
			headers: { authorization: `Bearer ${user.token}`, 'x-request-id': 'obs-e2e-get-1' },
		});
		assert.equal(r.status, 200);
		const anon = await httpJson('GET', `${stack.gatewayUrl}/threads/${threadId}`, {
			headers: { 'x-request-id': 'obs-e2e-anon-1' },
		});
		assert.equal(anon.status, 401);
		const lines = await until('the access lines', async () => {
			const all = jsonLines(stack.logs('gateway'));
			const want = ['obs-e2e-create-1', 'obs-e2e-get-1', 'obs-e2e-anon-1'];
			const got = want.map((id) => all.find((l) => l.rid === id && l.status !== undefined));
			return (got.every(Boolean) ? got : null);
		});
		const [create, get, anonLine] = lines;
		assert.equal(create.level, 'info');
		assert.equal(create.method, 'POST');
		assert.equal(create.path, '/threads');
		assert.equal(create.route, '/threads');
		assert.equal(create.status, 200);
		assert.equal(create.owner, user.id);
		assert.equal(create.trace_id, TRACE_ID);
		assert.equal(typeof create.duration_ms, 'number');
		assert.ok(create.duration_ms > 0);
		assert.equal(get.path, `/threads/${threadId}`);
		assert.equal(get.route, '/threads/{id}');
		assert.equal(get.owner, user.id);
		assert.equal(get.trace_id, undefined);
		assert.equal(anonLine.status, 401);
		assert.equal(anonLine.owner, '-');
		assert.ok(!stack.logs('gateway').includes('select=x'), 'the query string is not logged');
	});

	test('the traceparent and the request id reach every service\'s log, and the dev IdP\'s', async () => {
		// A fresh token: its check goes to the IdP (cache miss).
		const s = await stack.signup('obs-trace@example.com', 'correct-horse-battery');
		const r = await httpJson('GET', `${stack.gatewayUrl}/threads/${threadId}`, {
			headers: { authorization: `Bearer ${s.access_token}`, 'x-request-id': 'obs-e2e-trace-2', traceparent: TRACEPARENT },
		});
		assert.equal(r.status, 404); // another user's thread
		await until('trace ids in the gateway, auth-service and thread-service logs', async () => {
			const gw = jsonLines(stack.logs('gateway')).some((l) => l.rid === 'obs-e2e-trace-2' && l.trace_id === TRACE_ID);
			const au = jsonLines(stack.logs('auth')).some((l) => l.rid === 'obs-e2e-trace-2' && l.trace_id === TRACE_ID);
			const th = jsonLines(stack.logs('threads')).some((l) => l.rid === 'obs-e2e-trace-2' && l.trace_id === TRACE_ID);
			return (gw && au && th);
		});
		// The auth-service asked the dev IdP with X-Request-Id; the IdP
		// logged its request under that id.
		await until('the request id in the dev IdP log', async () =>
			jsonLines(stack.logs('dev-idp')).some((l) => l.rid === 'obs-e2e-trace-2' && /\/auth\/v1\/user/.test(l.msg)));
		// An invalid traceparent is dropped, not logged.
		await httpJson('GET', `${stack.gatewayUrl}/ok`, { headers: { 'x-request-id': 'obs-e2e-badtp', traceparent: '00-zz-yy-01' } });
		const bad = await until('the access line', async () =>
			jsonLines(stack.logs('gateway')).find((l) => l.rid === 'obs-e2e-badtp' && l.status));
		assert.equal(bad.trace_id, undefined);
	});

	test('an auth refusal logs its reason at info with the rid', async () => {
		const r = await httpJson('GET', `${stack.gatewayUrl}/threads/${threadId}`, {
			headers: { authorization: 'Bearer not-a-real-token', 'x-request-id': 'obs-e2e-refused', traceparent: TRACEPARENT },
		});
		assert.equal(r.status, 401);
		const line = await until('the refusal line', async () =>
			jsonLines(stack.logs('auth')).find((l) => l.rid === 'obs-e2e-refused' && /refused/.test(l.msg)));
		assert.equal(line.level, 'info');
		assert.equal(line.reason, 'unauthenticated');
		assert.equal(line.trace_id, TRACE_ID);
		assert.ok(!stack.logs('auth').includes('not-a-real-token'), 'the token is never logged');
	});

	test('every /metrics endpoint passes promtool check metrics', { skip: SKIP_PROM }, async () => {
		for (const name of ['gateway', 'auth', 'threads']) {
			const text = await metricsText(mport[name]);
			const r = await run(PROMTOOL, ['check', 'metrics'], { input: text });
			assert.equal(r.code, 0, `${name}: promtool says\n${r.stdout}${r.stderr}`);
		}
		const gw = await metricsText(mport.gateway);
		assert.match(gw, /^threadgate_gateway_requests_total\{route="\/threads",method="POST",status="200"\} \d+$/m);
		assert.match(gw, /^threadgate_gateway_request_duration_seconds_bucket\{route="\/threads\/\{id\}",method="GET",le="\+Inf"\} \d+$/m);
		assert.match(gw, /^threadgate_gateway_upstream_requests_total\{service="auth-service",outcome="ok"\} [1-9]\d*$/m);
		assert.match(gw, /^threadgate_gateway_open_connections \d+$/m);
		assert.match(gw, /^threadgate_gateway_ready 1$/m);
		assert.doesNotMatch(gw, new RegExp(threadId), 'no raw path or id in a label');
		const au = await metricsText(mport.auth);
		assert.match(au, /^threadgate_auth_requests_total\{outcome="valid"\} [1-9]\d*$/m);
		assert.match(au, /^threadgate_auth_requests_total\{outcome="refused"\} [1-9]\d*$/m);
		assert.match(au, /^threadgate_auth_cache_requests_total\{result="miss"\} [1-9]\d*$/m);
		assert.match(au, /^threadgate_auth_idp_requests_total\{result="2xx"\} [1-9]\d*$/m);
		assert.match(au, /^threadgate_auth_idp_request_duration_seconds_count [1-9]\d*$/m);
		assert.match(au, /^threadgate_auth_cache_entries \d+$/m);
		assert.match(au, /^threadgate_rpc_server_serving\{service="AuthService"\} 1$/m);
		const th = await metricsText(mport.threads);
		assert.match(th, /^threadgate_rpc_server_requests_total\{service="ThreadService",method="CreateThread",status="ok"\} [1-9]\d*$/m);
		assert.match(th, /^threadgate_rpc_server_request_duration_seconds_count\{service="ThreadService",method="GetThread"\} [1-9]\d*$/m);
		assert.match(th, /^process_resident_memory_bytes \d/m);
		assert.match(th, /^threadgate_build_info\{service="thread-service",version="[^"]+"\} 1$/m);
	});

	test('a real Prometheus scrapes every service and answers queries', { skip: SKIP_PROM }, async () => {
		const pdir = await tmpDir('tg-prom-');
		const port = await freePort();
		const job = (name) => `  - job_name: ${name}\n    static_configs:\n      - targets: ['127.0.0.1:${mport[name]}']\n`;
		await fsp.writeFile(path.join(pdir, 'prometheus.yml'),
			'global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n' +
			job('gateway') + job('auth') + job('threads'));
		const prom = await startProcess(PROMETHEUS, {
			args: [`--config.file=${path.join(pdir, 'prometheus.yml')}`,
				`--storage.tsdb.path=${path.join(pdir, 'data')}`,
				`--web.listen-address=127.0.0.1:${port}`],
			logFile: path.join(pdir, 'prometheus.log'),
		});
		try {
			const base = `http://127.0.0.1:${port}`;
			await waitFor('prometheus to be ready', async () => {
				const r = await fetch(`${base}/-/ready`, { signal: AbortSignal.timeout(1000) });
				await r.arrayBuffer();
				return (r.status === 200);
			}, prom);
			const query = async (q) => {
				const r = await httpJson('GET', `${base}/api/v1/query?query=${encodeURIComponent(q)}`);
				assert.equal(r.status, 200, r.text);
				assert.equal(r.json.status, 'success');
				return (r.json.data.result);
			};
			const queries = [
				'up{job="gateway"} == 1',
				'up{job="auth"} == 1',
				'up{job="threads"} == 1',
				'threadgate_gateway_requests_total{job="gateway",route="/threads",method="POST",status="200"}',
				'threadgate_auth_requests_total{job="auth",outcome="valid"}',
				'threadgate_rpc_server_requests_total{job="threads",service="ThreadService",method="CreateThread"}',
				'process_resident_memory_bytes{job="threads"}',
			];
			for (const q of queries) {
				const res = await until(`Prometheus to answer ${q}`, async () => {
					const r = await query(q);
					return (r.length > 0 ? r : null);
				});
				assert.ok(Number(res[0].value[1]) > 0, `${q}: ${JSON.stringify(res)}`);
			}
			// A rate over the scraped samples works too.
			await until('a request rate', async () => (await query('sum(rate(threadgate_gateway_requests_total[5s]))')).length > 0);
		} finally {
			await prom.stop();
		}
	});

	test('/metrics is not on the public port unless GATEWAY_PUBLIC_METRICS=1', async () => {
		const r = await fetch(`${stack.gatewayUrl}/metrics`);
		assert.equal(r.status, 404);
		await r.arrayBuffer();
		const gw = await startProcess('gateway', {
			args: ['--host', '127.0.0.1', '--port', '0', '--port-file', path.join(dir, 'gw2.port')],
			env: { AUTH_SERVICE_URL: stack.authUrl, THREAD_SERVICE_URL: stack.threadsUrl, GATEWAY_PUBLIC_METRICS: '1' },
			portFile: path.join(dir, 'gw2.port'),
			logFile: path.join(dir, 'gw2.log'),
		});
		try {
			const m = await fetch(`http://127.0.0.1:${gw.port}/metrics`);
			assert.equal(m.status, 200);
			assert.match(m.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
			assert.match(await m.text(), /^threadgate_build_info\{service="gateway"/m);
		} finally {
			await gw.stop();
		}
	});

	test('LOG_FORMAT=text: one readable line per event; JSON when stderr is a file', async () => {
		const gw = await startProcess('gateway', {
			args: ['--host', '127.0.0.1', '--port', '0', '--port-file', path.join(dir, 'gw3.port')],
			env: { AUTH_SERVICE_URL: stack.authUrl, THREAD_SERVICE_URL: stack.threadsUrl, LOG_FORMAT: 'text' },
			portFile: path.join(dir, 'gw3.port'),
			logFile: path.join(dir, 'gw3.log'),
		});
		try {
			const r = await fetch(`http://127.0.0.1:${gw.port}/ok?x=1`, { headers: { 'x-request-id': 'obs-text-1', traceparent: TRACEPARENT } });
			assert.equal(r.status, 200);
			await r.arrayBuffer();
			const line = await until('the text access line', async () =>
				gw.log().split('\n').find((l) => l.includes('rid=obs-text-1')));
			assert.match(line, new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z INFO  gateway: GET /ok 200 \\d+\\.\\d{3}ms owner=- rid=obs-text-1 trace=${TRACE_ID}$`));
			assert.ok(!gw.log().split('\n').some((l) => l.startsWith('{')), 'no JSON in text mode');
		} finally {
			await gw.stop();
		}
		// The main stack runs without LOG_FORMAT and logs to files: JSON.
		const lines = stack.logs('gateway').split('\n').filter((l) => l !== '');
		assert.ok(lines.length > 0);
		for (const l of lines) {
			assert.doesNotThrow(() => JSON.parse(l), l);
		}
	});

	test('--health-check of the auth-service: 0 serving, 1 when nothing answers', async () => {
		const ok = await run(binPath('auth'), ['--health-check'], { env: { AUTH_SERVICE_URL: stack.authUrl } });
		assert.equal(ok.code, 0, ok.stdout + ok.stderr);
		assert.match(ok.stdout, /^serving$/m);
		const down = await run(binPath('auth'), ['--health-check'],
			{ env: { AUTH_SERVICE_URL: `ipc://${path.join(dir, 'nobody.sock')}` } });
		assert.equal(down.code, 1, down.stdout + down.stderr);
		assert.match(down.stdout, /^not serving: /m);
	});

	// Last in this block: it stops and restarts services.
	test('/ready: 200 with both upstreams, 503 naming a killed one, 200 after its restart', async () => {
		const ready = async () => httpJson('GET', `${stack.gatewayUrl}/ready`);
		const gwCheck = async () => run(binPath('gateway'), ['--health-check', '--port', String(stack.procs.gateway.port)]);
		let r = await until('/ready 200', async () => {
			const x = await ready();
			return (x.status === 200 ? x : null);
		});
		assert.deepEqual(r.json.upstreams, { 'auth-service': { serving: true }, 'thread-service': { serving: true } });
		assert.equal((await gwCheck()).code, 0);

		for (const [proc, name] of [['auth', 'auth-service'], ['threads', 'thread-service']]) {
			await stack.procs[proc].stop();
			r = await until(`/ready 503 naming ${name}`, async () => {
				const x = await ready();
				return (x.status === 503 && x.json.missing.includes(name) ? x : null);
			});
			assert.equal(r.json.ready, false);
			assert.deepEqual(r.json.missing, [name]);
			assert.equal(r.json.upstreams[name].serving, false);
			assert.match(r.json.detail, new RegExp(`not ready: ${name} \\(.+\\)`));
			// Liveness is unaffected.
			const ok = await httpJson('GET', `${stack.gatewayUrl}/ok`);
			assert.equal(ok.status, 200);
			const check = await gwCheck();
			assert.equal(check.code, 1, check.stdout);
			assert.match(check.stdout, new RegExp(name));
			await stack.restart(proc);
			await until('/ready 200 again', async () => (await ready()).status === 200);
			assert.equal((await gwCheck()).code, 0);
		}
		// The restarted thread-service serves traffic again.
		const g = await httpJson('GET', `${stack.gatewayUrl}/threads/${threadId}`, { headers: { authorization: `Bearer ${user.token}` } });
		assert.equal(g.status, 200);
	});
});

describe('SIGTERM: /ready turns 503 first, then the gateway drains', () => {
	let stack;

	before(async () => {
		stack = await startStack({ idp: false, authEnv: { AUTH_PROVIDER: 'static', THREADGATE_DEV: '1',
			AUTH_STATIC_FILE: await staticFile() } });
	});

	after(async () => {
		if (stack) {
			await stack.stop();
		}
	});

	test('while draining /ready is 503 and /ok still 200; exit 0', async () => {
		const dir = stack.dir;
		const gw = await startProcess('gateway', {
			args: ['--host', '127.0.0.1', '--port', '0', '--port-file', path.join(dir, 'gwd.port')],
			env: { AUTH_SERVICE_URL: stack.authUrl, THREAD_SERVICE_URL: stack.threadsUrl,
				GATEWAY_READY_INTERVAL_MS: '100', GATEWAY_DRAIN_DELAY_MS: '3000' },
			portFile: path.join(dir, 'gwd.port'),
			logFile: path.join(dir, 'gwd.log'),
		});
		const base = `http://127.0.0.1:${gw.port}`;
		await until('/ready 200', async () => (await httpJson('GET', `${base}/ready`)).status === 200);
		gw.child.kill('SIGTERM');
		const r = await until('/ready 503 while draining', async () => {
			const x = await httpJson('GET', `${base}/ready`);
			return (x.status === 503 ? x : null);
		});
		assert.equal(r.json.draining, true);
		assert.equal(r.json.detail, 'shutting down');
		// Still serving traffic during the drain delay.
		const ok = await httpJson('GET', `${base}/ok`);
		assert.equal(ok.status, 200);
		const t = await httpJson('GET', `${base}/threads/${'0'.repeat(8)}-0000-4000-8000-${'0'.repeat(12)}`,
			{ headers: { authorization: 'Bearer static-token-1' } });
		assert.equal(t.status, 404);
		const { code } = await gw.stop();
		assert.equal(code, 0);
		assert.match(gw.log(), /draining: \/ready answers 503/);
	});
});

describe('auth-service Health in jwt mode', () => {
	test('not serving until a signing key is loaded; serving once it is', async () => {
		const dir = await tmpDir('tg-obs-jwt-');
		const idp = await startProcess('dev-idp', {
			args: ['--host', '127.0.0.1', '--port', '0', '--port-file', path.join(dir, 'idp.port'), '--db', path.join(dir, 'idp.db')],
			portFile: path.join(dir, 'idp.port'),
			logFile: path.join(dir, 'idp.log'),
		});
		const dead = await freePort();
		const start = async (name, jwksUrl) => startProcess('auth', {
			env: { AUTH_SERVICE_URL: `ipc://${path.join(dir, `${name}.sock`)}`, AUTH_PROVIDER: 'jwt',
				AUTH_JWKS_URL: jwksUrl, AUTH_ISSUER: '*', AUTH_AUDIENCE: '*', AUTH_IDP_TIMEOUT_MS: '500' },
			logFile: path.join(dir, `${name}.log`),
		});
		const check = async (name) => run(binPath('auth'), ['--health-check'],
			{ env: { AUTH_SERVICE_URL: `ipc://${path.join(dir, `${name}.sock`)}` } });
		const noKeys = await start('nokeys', `http://127.0.0.1:${dead}/jwks.json`);
		const keys = await start('keys', `http://127.0.0.1:${idp.port}/auth/v1/.well-known/jwks.json`);
		try {
			const down = await until('nokeys to answer not serving', async () => {
				const r = await check('nokeys');
				return (r.code === 1 && /no signing keys yet/.test(r.stdout) ? r : null);
			});
			assert.match(down.stdout, /^not serving: no signing keys yet/m);
			await until('keys to answer serving', async () => (await check('keys')).code === 0);
			// Info lines reach the log within the writer's interval.
			await until('the key load in the log', async () => /jwt: loaded \d+ signing key/.test(keys.log()));
		} finally {
			await noKeys.stop();
			await keys.stop();
			await idp.stop();
		}
	});
});

// A static-provider token file for the drain test (no IdP needed).
async function staticFile() {
	const dir = await tmpDir('tg-obs-static-');
	const file = path.join(dir, 'tokens.json');
	await fsp.writeFile(file, JSON.stringify({ 'static-token-1': { identity: 'static-user-1' } }));
	return (file);
}
