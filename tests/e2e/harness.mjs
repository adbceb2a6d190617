// SPDX-License-Identifier: MIT
//
// End-to-end harness: starts the real threadgate binaries (dev IdP,
// auth-service, thread-service, gateway) as child processes on loopback,
// each in a private temporary directory, waits for readiness by bounded
// polling (never a blind sleep), and stops them, asserting that nothing
// crashed. ESM, Node >= 20, no dependencies. Used by every tests/e2e suite.
//
//   import { startStack } from './harness.mjs';
//   const stack = await startStack();          // dev IdP + the three services
//   after(() => stack.stop());                 // throws if a service crashed
//   const s = await stack.signup('a@example.com', 'password-1');
//   // s.access_token, s.user.id; stack.gatewayUrl is http://127.0.0.1:<port>
//
// Ports are always 0 (any free port) with --port-file; the nng sockets are
// ipc:// files in the temporary directory; databases live there too. The
// thread-service's database is a sqlite file there, or, with TG_TEST_DB=pg
// (ctest sets it for the suites labelled pg, with TG_PG_STATE), a fresh
// database of the test PostgreSQL cluster for each stack (newThreadsDb). The
// environment handed to the services is the caller's minus every threadgate
// configuration variable (SUPABASE_*, AUTH_*, GATEWAY_*, ...), so a
// developer's shell cannot change what a test does.
//
// When a test file fails, the tail of every service log seen in this process
// is printed to stderr at exit (TG_E2E_LOG_LINES lines each, default 40).
// TG_KEEP_TMP=1 keeps the temporary directories for inspection.

import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

// Binary locations inside the build tree (the project-wide convention).
const BINARIES = {
	gateway: 'gateway/threadgate-gateway',
	auth: 'auth-service/threadgate-auth',
	threads: 'thread-service/threadgate-threads',
	'dev-idp': 'dev-idp/threadgate-dev-idp',
};

// How long a service may take to become ready. Sanitizer builds start
// several times slower than release builds on this 2-core machine, hence
// a generous default; override with TG_E2E_START_TIMEOUT_MS.
const START_TIMEOUT_MS = envInt('TG_E2E_START_TIMEOUT_MS', 20000);
// How long stop() waits after SIGTERM before SIGKILL (the brief's 5 s).
const STOP_TIMEOUT_MS = 5000;
// Poll interval of every readiness loop.
const POLL_MS = 20;
// Lines of each service log printed when a test file fails.
const LOG_TAIL_LINES = envInt('TG_E2E_LOG_LINES', 40);
// Per-request timeout of the harness's own HTTP calls (signup, /ok).
const HTTP_TIMEOUT_MS = 10000;

// Environment variables that configure threadgate; removed from the
// inherited environment so only what a test passes reaches a service.
const CONFIG_PREFIXES = ['SUPABASE_', 'AUTH_', 'GATEWAY_', 'THREAD_', 'THREADS_',
	'DEV_IDP_', 'OIDC_', 'THREADGATE_', 'LOG_LEVEL', 'LOG_FORMAT', 'METRICS_'];

// Dev IdP keys used by test stacks (any non-empty strings work).
const TEST_ANON_KEY = 'e2e-anon-key';
const TEST_SERVICE_KEY = 'e2e-service-key';

function envInt(name, dflt) {
	const v = Number.parseInt(process.env[name] ?? '', 10);
	return (Number.isFinite(v) && v > 0 ? v : dflt);
}

function sleep(ms) {
	return (new Promise((resolve) => setTimeout(resolve, ms)));
}

// ---------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------

/** The build tree: $TG_BUILD_DIR (CTest sets it) or <repo>/build. */
export function buildDir() {
	return (path.resolve(process.env.TG_BUILD_DIR || path.join(REPO, 'build')));
}

/** The repository root. */
export function repoDir() {
	return (REPO);
}

/**
 * binPath(name): absolute path of 'gateway' | 'auth' | 'threads' | 'dev-idp'
 * in buildDir(). Throws on an unknown name or a missing binary.
 */
export function binPath(name) {
	const rel = BINARIES[name];
	if (rel === undefined) {
		throw new Error(`binPath: unknown service '${name}' (one of ${Object.keys(BINARIES).join(', ')})`);
	}
	const p = path.join(buildDir(), rel);
	if (!fs.existsSync(p)) {
		throw new Error(`binPath: ${p} does not exist; build first (cmake --build ${buildDir()})`);
	}
	return (p);
}

// Temporary directories made by tmpDir() and not yet removed.
const tmpDirs = new Set();

/**
 * tmpDir(prefix): a new private directory under os.tmpdir(). It is removed
 * by the stop() of the stack that made it, or at process exit.
 */
export async function tmpDir(prefix = 'tg-e2e-') {
	const d = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
	tmpDirs.add(d);
	return (d);
}

/** removeTmpDir(dir): removes a directory made by tmpDir() (unless TG_KEEP_TMP=1). */
export async function removeTmpDir(dir) {
	tmpDirs.delete(dir);
	if (process.env.TG_KEEP_TMP === '1') {
		process.stderr.write(`harness: keeping ${dir}\n`);
		return;
	}
	await fsp.rm(dir, { recursive: true, force: true });
}

/** usesPg(): whether this run's thread-services use PostgreSQL (TG_TEST_DB=pg). */
export function usesPg() {
	return (process.env.TG_TEST_DB === 'pg');
}

/**
 * newThreadsDb(dir): a THREADS_DB target for a new, empty thread-service
 * database. With TG_TEST_DB=pg: a fresh database of the test PostgreSQL
 * cluster, made by `scripts/pg-test-cluster.sh createdb` (the cluster is
 * the one $TG_PG_STATE names, started by the ctest fixture); otherwise the
 * sqlite file threads.db in dir.
 */
export async function newThreadsDb(dir) {
	if (!usesPg()) {
		return (path.join(dir, 'threads.db'));
	}
	const script = path.join(REPO, 'scripts', 'pg-test-cluster.sh');
	const out = await new Promise((resolve, reject) => {
		execFile(script, ['createdb'], { timeout: START_TIMEOUT_MS }, (err, stdout, stderr) => {
			if (err) {
				reject(new Error(`${script} createdb failed: ${err.message}\n${stderr}`));
			} else {
				resolve(stdout.trim());
			}
		});
	});
	if (!out) {
		throw new Error(`${script} createdb printed no target`);
	}
	return (out);
}

// ---------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------

// Every process started in this Node process, for the failure report.
const allProcs = [];

function baseEnv() {
	const env = {};
	for (const [k, v] of Object.entries(process.env)) {
		if (!CONFIG_PREFIXES.some((p) => k.startsWith(p))) {
			env[k] = v;
		}
	}
	return (env);
}

function tail(text, n) {
	const lines = text.split('\n');
	if (lines.length && lines[lines.length - 1] === '') {
		lines.pop();
	}
	return (lines.slice(-n).join('\n'));
}

function describeExit(code, signal) {
	return (signal ? `killed by ${signal}` : `exit code ${code}`);
}

async function waitPortFile(file, proc, label) {
	const deadline = Date.now() + START_TIMEOUT_MS;
	for (;;) {
		let text = '';
		try {
			text = await fsp.readFile(file, 'utf8');
		} catch {
			// not written yet
		}
		const m = /^\s*(\d+)\s*$/.exec(text);
		if (m) {
			const port = Number(m[1]);
			if (port > 0 && port < 65536) {
				return (port);
			}
		}
		if (proc.exited) {
			throw new Error(`${label} exited (${describeExit(proc.exitCode, proc.exitSignal)}) before writing ${file}\n${tail(proc.log(), LOG_TAIL_LINES)}`);
		}
		if (Date.now() > deadline) {
			throw new Error(`${label}: no port in ${file} after ${START_TIMEOUT_MS} ms\n${tail(proc.log(), LOG_TAIL_LINES)}`);
		}
		await sleep(POLL_MS);
	}
}

/**
 * waitFor(what, check, proc): polls the async predicate check() until it is
 * true, proc (optional) exits, or START_TIMEOUT_MS passes.
 */
export async function waitFor(what, check, proc = null) {
	const deadline = Date.now() + START_TIMEOUT_MS;
	for (;;) {
		let ok = false;
		try {
			ok = await check();
		} catch {
			ok = false;
		}
		if (ok) {
			return;
		}
		if (proc && proc.exited) {
			throw new Error(`${proc.name} exited (${describeExit(proc.exitCode, proc.exitSignal)}) while waiting for ${what}\n${tail(proc.log(), LOG_TAIL_LINES)}`);
		}
		if (Date.now() > deadline) {
			const extra = proc ? `\n${tail(proc.log(), LOG_TAIL_LINES)}` : '';
			throw new Error(`timed out after ${START_TIMEOUT_MS} ms waiting for ${what}${extra}`);
		}
		await sleep(POLL_MS);
	}
}

/**
 * metricsEnv(dir, name): the environment that gives a service a metrics
 * listener on a free loopback port, written to dir/name.mport.
 */
export function metricsEnv(dir, name) {
	return ({ METRICS_ADDR: '127.0.0.1:0', METRICS_PORT_FILE: path.join(dir, `${name}.mport`) });
}

/** readPortFile(file): the port a service wrote there, once it has. */
export async function readPortFile(file) {
	let port = null;
	await waitFor(`a port in ${file}`, async () => {
		const m = /^(\d+)\s*$/.exec(await fsp.readFile(file, 'utf8').catch(() => ''));
		port = m ? Number(m[1]) : null;
		return (port !== null);
	});
	return (port);
}

/**
 * metricSum(port, name, labels): the sum of the series of counter or gauge
 * name on the metrics listener at port whose labels match labels (a regex
 * source; '' = all series).
 */
export async function metricSum(port, name, labels = '') {
	const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
	if (r.status !== 200) {
		throw new Error(`GET /metrics on port ${port}: ${r.status}`);
	}
	const text = await r.text();
	const re = new RegExp(`^${name}(\\{[^}]*${labels}[^}]*\\})? (\\d+)$`, 'gm');
	let sum = 0;
	for (const m of text.matchAll(re)) {
		sum += Number(m[2]);
	}
	return (sum);
}

/**
 * startProcess(name, opts) starts one binary.
 *   name: 'gateway' | 'auth' | 'threads' | 'dev-idp', or an absolute path.
 *   opts.args: argv after the program. opts.env: added to the (cleaned)
 *   environment. opts.logFile: where stdout+stderr go (required).
 *   opts.portFile: when set, wait until the process wrote a port there. The
 *   process must be told to write it (e.g. args '--port 0 --port-file <f>').
 * Returns { name, child, port, pid, exited, exitCode, exitSignal, log(),
 * stop() }. stop() sends SIGTERM, waits (SIGKILL after 5 s) and throws,
 * with the log tail, unless the process exited with code 0 on that
 * SIGTERM; a process that died earlier is reported the same way.
 */
export async function startProcess(name, { args = [], env = {}, portFile = null, logFile } = {}) {
	if (!logFile) {
		throw new Error('startProcess: logFile is required');
	}
	const bin = path.isAbsolute(name) ? name : binPath(name);
	const label = path.isAbsolute(name) ? path.basename(name) : name;
	if (portFile) {
		await fsp.rm(portFile, { force: true });
	}
	const fd = fs.openSync(logFile, 'a');
	let child;
	try {
		child = spawn(bin, args, {
			env: { ...baseEnv(), ...env },
			stdio: ['ignore', fd, fd],
		});
	} finally {
		fs.closeSync(fd);
	}
	const proc = {
		name: label,
		child,
		pid: child.pid,
		port: null,
		exited: false,
		exitCode: null,
		exitSignal: null,
		stopping: false,
		finalLog: null,
		logFile,
		log() {
			if (this.finalLog !== null) {
				return (this.finalLog);
			}
			try {
				return (fs.readFileSync(logFile, 'utf8'));
			} catch {
				return ('');
			}
		},
		async stop() {
			return (stopProc(this));
		},
	};
	proc.done = new Promise((resolve) => {
		child.on('exit', (code, signal) => {
			proc.exited = true;
			proc.exitCode = code;
			proc.exitSignal = signal;
			resolve();
		});
		child.on('error', (err) => {
			proc.exited = true;
			proc.exitCode = -1;
			proc.spawnError = err;
			resolve();
		});
	});
	allProcs.push(proc);
	if (portFile) {
		try {
			proc.port = await waitPortFile(portFile, proc, label);
		} catch (err) {
			await killQuietly(proc);
			throw err;
		}
	}
	return (proc);
}

async function killQuietly(proc) {
	if (!proc.exited) {
		proc.stopping = true;
		proc.child.kill('SIGKILL');
		await proc.done;
	}
}

async function stopProc(proc) {
	let problem = null;
	if (proc.exited && !proc.stopping) {
		problem = `${proc.name} (pid ${proc.pid}) had already exited unexpectedly: ${describeExit(proc.exitCode, proc.exitSignal)}`;
	} else if (!proc.exited) {
		proc.stopping = true;
		proc.child.kill('SIGTERM');
		let timer = null;
		const timeout = new Promise((resolve) => {
			timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
		});
		const r = await Promise.race([proc.done.then(() => 'done'), timeout]);
		clearTimeout(timer);
		if (r === 'timeout') {
			proc.child.kill('SIGKILL');
			await proc.done;
			problem = `${proc.name} (pid ${proc.pid}) ignored SIGTERM for ${STOP_TIMEOUT_MS} ms and was killed`;
		} else if (proc.exitCode !== 0) {
			problem = `${proc.name} (pid ${proc.pid}) did not stop cleanly on SIGTERM: ${describeExit(proc.exitCode, proc.exitSignal)}`;
		}
	}
	proc.finalLog = proc.log();
	if (problem) {
		throw new Error(`${problem}\n--- ${proc.name} log (last ${LOG_TAIL_LINES} lines) ---\n${tail(proc.finalLog, LOG_TAIL_LINES)}`);
	}
	return ({ code: proc.exitCode, signal: proc.exitSignal });
}

// ---------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------

/**
 * httpJson(method, url, { headers, body }) → { status, headers, text, json }.
 * body (if any) is JSON-encoded; json is null when the body is not JSON.
 */
export async function httpJson(method, url, { headers = {}, body } = {}) {
	const init = { method, headers: { ...headers }, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) };
	if (body !== undefined) {
		init.headers['content-type'] = 'application/json';
		init.body = typeof body === 'string' ? body : JSON.stringify(body);
	}
	const res = await fetch(url, init);
	const text = await res.text();
	let json = null;
	try {
		json = JSON.parse(text);
	} catch {
		json = null;
	}
	return ({ status: res.status, headers: res.headers, text, json });
}

// ---------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------

/**
 * startStack(opts) starts dev IdP (unless opts.idp === false or
 * opts.supabaseUrl is set), thread-service, auth-service and gateway.
 *   opts.idp (true), opts.idpEnv ({}: e.g. { DEV_IDP_JWT_EXP: '2' }),
 *   opts.authEnv, opts.threadsEnv, opts.gatewayEnv ({}: added last, so they
 *   override the harness's choices), opts.supabaseUrl + opts.serviceKey
 *   (+ opts.anonKey): use that IdP instead of a dev IdP.
 *   opts.threadsDb: the thread-service's THREADS_DB (default:
 *   newThreadsDb(), i.e. sqlite in the stack's directory, or a fresh
 *   PostgreSQL database with TG_TEST_DB=pg).
 * With idp: false and no supabaseUrl, the auth-service gets only authEnv
 * (plus its listen URL): configure the provider there (jwt, static, ...).
 * Resolves once the gateway's GET /ok answers 200. On a start failure every
 * process already started is killed and the error carries the log tail.
 * Returns { gatewayUrl, idpUrl, anonKey, serviceKey, dir, authUrl,
 * threadsUrl, procs, stop(), restart(name), signup(email, password),
 * login(email, password), logs(name) }.
 */
export async function startStack(opts = {}) {
	const o = {
		idp: true, idpEnv: {}, authEnv: {}, threadsEnv: {}, gatewayEnv: {},
		supabaseUrl: null, serviceKey: null, anonKey: null, threadsDb: null, ...opts,
	};
	const dir = await tmpDir('tg-e2e-');
	const threadsDb = o.threadsDb ?? await newThreadsDb(dir);
	const stack = {
		dir,
		procs: {},
		specs: {},
		gatewayUrl: null,
		idpUrl: null,
		anonKey: null,
		serviceKey: null,
		authUrl: `ipc://${path.join(dir, 'auth.sock')}`,
		threadsUrl: `ipc://${path.join(dir, 'threads.sock')}`,
		stopped: false,
	};

	const useDevIdp = o.idp && !o.supabaseUrl;
	stack.specs['dev-idp'] = useDevIdp ? {
		args: ['--host', '127.0.0.1', '--port', '0', '--port-file', path.join(dir, 'dev-idp.port'),
			'--db', path.join(dir, 'dev-idp.db')],
		env: { DEV_IDP_ANON_KEY: TEST_ANON_KEY, DEV_IDP_SERVICE_KEY: TEST_SERVICE_KEY, ...o.idpEnv },
		portFile: path.join(dir, 'dev-idp.port'),
	} : null;
	stack.specs.threads = {
		args: [],
		env: { THREAD_SERVICE_URL: stack.threadsUrl, THREADS_DB: threadsDb,
			...o.threadsEnv },
	};
	stack.specs.auth = {
		args: [],
		env: { AUTH_SERVICE_URL: stack.authUrl, AUTH_WORKERS: '8' },
	};

	const order = ['dev-idp', 'threads', 'auth', 'gateway'];
	try {
		if (useDevIdp) {
			await startOne(stack, 'dev-idp');
			stack.idpUrl = `http://127.0.0.1:${stack.procs['dev-idp'].port}`;
			stack.anonKey = stack.specs['dev-idp'].env.DEV_IDP_ANON_KEY;
			stack.serviceKey = stack.specs['dev-idp'].env.DEV_IDP_SERVICE_KEY;
		} else if (o.supabaseUrl) {
			stack.idpUrl = o.supabaseUrl.replace(/\/+$/, '');
			stack.serviceKey = o.serviceKey;
			stack.anonKey = o.anonKey || o.serviceKey;
		}
		if (stack.idpUrl) {
			Object.assign(stack.specs.auth.env, {
				AUTH_PROVIDER: 'supabase', SUPABASE_URL: stack.idpUrl,
				SUPABASE_SERVICE_KEY: stack.serviceKey ?? '',
			});
		}
		Object.assign(stack.specs.auth.env, o.authEnv);
		// authEnv/threadsEnv may move a service (e.g. to tcp://); the
		// gateway follows unless gatewayEnv says otherwise.
		stack.authUrl = stack.specs.auth.env.AUTH_SERVICE_URL;
		stack.threadsUrl = stack.specs.threads.env.THREAD_SERVICE_URL;
		stack.specs.gateway = {
			args: ['--host', '127.0.0.1', '--port', '0', '--port-file', path.join(dir, 'gateway.port')],
			env: { AUTH_SERVICE_URL: stack.authUrl, THREAD_SERVICE_URL: stack.threadsUrl,
				GATEWAY_THREADS: '2', ...o.gatewayEnv },
			portFile: path.join(dir, 'gateway.port'),
		};
		await startOne(stack, 'threads');
		await startOne(stack, 'auth');
		await startOne(stack, 'gateway');
	} catch (err) {
		for (const name of order.slice().reverse()) {
			const p = stack.procs[name];
			if (p) {
				await killQuietly(p);
				p.finalLog = p.log();
			}
		}
		stack.stopped = true;
		await removeTmpDir(dir);
		throw err;
	}

	stack.stop = async () => stopStack(stack);
	stack.restart = async (name) => restartOne(stack, name);
	stack.logs = (name) => (stack.procs[name] ? stack.procs[name].log() : '');
	stack.signup = async (email, password) => idpSession(stack, '/auth/v1/signup', { email, password });
	stack.login = async (email, password) =>
		idpSession(stack, '/auth/v1/token?grant_type=password', { email, password });
	return (stack);
}

// The file of an ipc:// URL, or null for other transports.
function ipcPath(url) {
	return (typeof url === 'string' && url.startsWith('ipc://') ? url.slice('ipc://'.length) : null);
}

// tcp://host:port → { host, port }, or null.
function tcpAddr(url) {
	const m = typeof url === 'string' ? /^tcp:\/\/\[?([^\]]*?)\]?:(\d+)$/.exec(url) : null;
	if (!m) {
		return (null);
	}
	const host = m[1] === '' || m[1] === '0.0.0.0' || m[1] === '*' ? '127.0.0.1' : m[1];
	return ({ host, port: Number(m[2]) });
}

function tcpConnects({ host, port }) {
	return (new Promise((resolve) => {
		const c = net.connect({ host, port });
		c.setTimeout(1000);
		c.once('connect', () => { c.destroy(); resolve(true); });
		c.once('error', () => resolve(false));
		c.once('timeout', () => { c.destroy(); resolve(false); });
	}));
}

async function startOne(stack, name) {
	const spec = stack.specs[name];
	const url = name === 'auth' ? spec.env.AUTH_SERVICE_URL
		: name === 'threads' ? spec.env.THREAD_SERVICE_URL : null;
	const socket = ipcPath(url);
	const tcp = tcpAddr(url);
	if (socket) {
		await fsp.rm(socket, { force: true });
	}
	const proc = await startProcess(name, {
		args: spec.args,
		env: spec.env,
		portFile: spec.portFile ?? null,
		logFile: path.join(stack.dir, `${name}.log`),
	});
	stack.procs[name] = proc;
	if (socket) {
		// An nng ipc listener creates its socket file when it listens.
		await waitFor(`${name} to listen on ${socket}`,
			async () => fs.existsSync(socket), proc);
	} else if (tcp) {
		await waitFor(`${name} to listen on ${url}`, async () => tcpConnects(tcp), proc);
	}
	if (name === 'gateway') {
		stack.gatewayUrl = `http://127.0.0.1:${proc.port}`;
		await waitFor(`GET ${stack.gatewayUrl}/ok to answer 200`, async () => {
			const r = await fetch(`${stack.gatewayUrl}/ok`, { signal: AbortSignal.timeout(1000) });
			await r.arrayBuffer();
			return (r.status === 200);
		}, proc);
	}
}

async function restartOne(stack, name) {
	const proc = stack.procs[name];
	if (!proc) {
		throw new Error(`restart: '${name}' is not running in this stack`);
	}
	await stopProc(proc);
	const spec = stack.specs[name];
	// Keep the port, so the other services' configuration stays valid.
	if (spec.portFile && proc.port) {
		const i = spec.args.indexOf('--port');
		spec.args = spec.args.slice();
		spec.args[i + 1] = String(proc.port);
	}
	// The just-closed listening port may be briefly unavailable; retry a
	// bounded number of times.
	const deadline = Date.now() + START_TIMEOUT_MS;
	for (;;) {
		try {
			await startOne(stack, name);
			return (stack.procs[name]);
		} catch (err) {
			if (Date.now() > deadline) {
				throw err;
			}
			await sleep(100);
		}
	}
}

async function stopStack(stack) {
	if (stack.stopped) {
		return;
	}
	stack.stopped = true;
	const errors = [];
	for (const name of ['gateway', 'auth', 'threads', 'dev-idp']) {
		const p = stack.procs[name];
		if (!p) {
			continue;
		}
		try {
			await stopProc(p);
		} catch (err) {
			errors.push(err.message);
		}
	}
	if (errors.length) {
		await removeTmpDir(stack.dir);
		throw new Error(`stack stop: ${errors.length} service(s) did not end cleanly\n${errors.join('\n\n')}`);
	}
	await removeTmpDir(stack.dir);
}

async function idpSession(stack, route, body) {
	if (!stack.idpUrl) {
		throw new Error('this stack has no Supabase-compatible IdP');
	}
	const r = await httpJson('POST', `${stack.idpUrl}${route}`, {
		headers: { apikey: stack.anonKey ?? '' },
		body,
	});
	if (r.status !== 200 || !r.json || typeof r.json.access_token !== 'string') {
		throw new Error(`IdP ${route} → HTTP ${r.status}: ${r.text.slice(0, 500)}`);
	}
	return (r.json);
}

/** logTails(): the log tail of every service this process started. */
export function logTails(lines = LOG_TAIL_LINES) {
	const out = [];
	for (const p of allProcs) {
		const t = tail(p.log(), lines);
		out.push(`--- ${p.name} (pid ${p.pid}, ${p.logFile}) last ${lines} lines ---\n${t}`);
	}
	return (out.join('\n'));
}

// On failure, show what the services said; always clean up.
process.on('exit', (code) => {
	const failed = code !== 0 || (process.exitCode !== undefined && process.exitCode !== 0);
	for (const p of allProcs) {
		if (!p.exited) {
			try {
				p.child.kill('SIGKILL');
			} catch {
				// already gone
			}
		}
	}
	if (failed && allProcs.length) {
		try {
			process.stderr.write(`\nharness: a test failed; service logs:\n${logTails()}\n`);
		} catch {
			// stderr closed
		}
	}
	if (process.env.TG_KEEP_TMP !== '1') {
		for (const d of tmpDirs) {
			try {
				fs.rmSync(d, { recursive: true, force: true });
			} catch {
				// best effort
			}
		}
	}
});
