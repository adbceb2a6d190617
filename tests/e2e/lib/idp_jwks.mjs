// SPDX-License-Identifier: MIT
//
// Helpers for the jwt-mode end-to-end suites (auth_jwt_matrix,
// oidc_provider): a fake IdP that serves a JWKS from a Node http server on
// a free loopback port and counts its hits, key generation and token
// minting with the npm package `jose` (an implementation independent of
// ours), a raw HTTP/1.1 client for requests fetch() cannot make (two
// Authorization headers, exact header bytes), and a bounded poll.

import http from 'node:http';
import net from 'node:net';
import * as jose from 'jose';

// Most bytes of an HTTP answer read by rawRequest(); gateway answers here
// are small JSON documents.
const RAW_MAX = 1 << 20;
// Timeout of one rawRequest().
const RAW_TIMEOUT_MS = 10000;

/**
 * startJwksServer(): an http server on 127.0.0.1:<free port> serving
 * GET /jwks.json. Returns { url, hits(), reset(), setKeys(jwks[]),
 * setMode('ok'|'garbage'|'500'|'hang'), setMaxAge(n|null), close() }.
 * Every request to /jwks.json counts as a hit, whatever the mode.
 */
export async function startJwksServer() {
	let keys = [];
	let mode = 'ok';
	let maxAge = null;
	let hits = 0;
	const hanging = new Set();
	const server = http.createServer((req, res) => {
		if (req.url !== '/jwks.json') {
			res.writeHead(404).end();
			return;
		}
		hits++;
		if (mode === 'hang') {
			hanging.add(res);
			return;
		}
		if (mode === '500') {
			res.writeHead(500, { 'content-type': 'text/plain' }).end('boom');
			return;
		}
		const headers = { 'content-type': 'application/json' };
		if (maxAge !== null) {
			headers['cache-control'] = `public, max-age=${maxAge}`;
		}
		res.writeHead(200, headers);
		res.end(mode === 'garbage' ? '<html>502 Bad Gateway</html>' : JSON.stringify({ keys }));
	});
	await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
	const { port } = server.address();
	return {
		url: `http://127.0.0.1:${port}/jwks.json`,
		hits: () => hits,
		setKeys: (k) => { keys = k; },
		setMode: (m) => { mode = m; },
		setMaxAge: (a) => { maxAge = a; },
		close: async () => {
			for (const r of hanging) {
				r.destroy();
			}
			server.closeAllConnections?.();
			await new Promise((resolve) => server.close(resolve));
		},
	};
}

/** deadUrl(): an http URL on a loopback port nothing listens on. */
export async function deadUrl(pathname = '/jwks.json') {
	const s = net.createServer();
	await new Promise((resolve) => s.listen(0, '127.0.0.1', resolve));
	const { port } = s.address();
	await new Promise((resolve) => s.close(resolve));
	return (`http://127.0.0.1:${port}${pathname}`);
}

/**
 * makeKey(alg, kid): a jose key pair for alg ('ES256' | 'RS256' | ...)
 * with its public JWK ({kid, alg, use:'sig'} added).
 */
export async function makeKey(alg, kid) {
	const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
	const jwk = await jose.exportJWK(publicKey);
	const pem = await jose.exportSPKI(publicKey);
	return { alg, kid, publicKey, privateKey, pem, jwk: { ...jwk, kid, alg, use: 'sig' } };
}

/** now(): Unix seconds. */
export function now() {
	return (Math.floor(Date.now() / 1000));
}

/**
 * mint(key, claims, header): a compact JWS made by jose. claims are used
 * as given (no defaults added); header overrides { alg, kid }.
 */
export async function mint(key, claims, header = {}) {
	const h = { alg: key.alg, kid: key.kid, ...header };
	for (const k of Object.keys(h)) {
		if (h[k] === undefined) {
			delete h[k];
		}
	}
	return (new jose.SignJWT(claims).setProtectedHeader(h).sign(key.privateKey));
}

/** mintHs256(secretBytes, claims, header): an HS256 JWS made by jose. */
export async function mintHs256(secret, claims, header = {}) {
	return (new jose.SignJWT(claims).setProtectedHeader({ alg: 'HS256', ...header }).sign(secret));
}

/** unsecured(claims): an `alg: none` JWT made by jose. */
export function unsecured(claims) {
	return (new jose.UnsecuredJWT(claims).encode());
}

/**
 * rawRequest(port, method, path, headers, body): one HTTP/1.1 request over
 * a fresh connection. headers is a list of [name, value] pairs sent
 * verbatim and in order (duplicates allowed). Resolves { status, headers
 * (lower-case name -> last value), body, json }.
 */
export function rawRequest(port, method, path, headers = [], body = null) {
	return new Promise((resolve, reject) => {
		const sock = net.connect(port, '127.0.0.1');
		const chunks = [];
		let size = 0;
		const timer = setTimeout(() => {
			sock.destroy();
			reject(new Error(`rawRequest ${method} ${path}: no answer in ${RAW_TIMEOUT_MS} ms`));
		}, RAW_TIMEOUT_MS);
		sock.on('connect', () => {
			let req = `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n`;
			for (const [k, v] of headers) {
				req += `${k}: ${v}\r\n`;
			}
			if (body !== null) {
				req += `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`;
			}
			req += '\r\n';
			sock.write(req);
			if (body !== null) {
				sock.write(body);
			}
		});
		sock.on('data', (d) => {
			size += d.length;
			if (size > RAW_MAX) {
				sock.destroy(new Error('answer too large'));
				return;
			}
			chunks.push(d);
		});
		sock.on('error', (e) => {
			clearTimeout(timer);
			reject(e);
		});
		sock.on('close', () => {
			clearTimeout(timer);
			const text = Buffer.concat(chunks).toString('utf8');
			const end = text.indexOf('\r\n\r\n');
			if (end < 0) {
				reject(new Error(`rawRequest ${method} ${path}: incomplete answer: ${JSON.stringify(text.slice(0, 200))}`));
				return;
			}
			const lines = text.slice(0, end).split('\r\n');
			const status = Number.parseInt(lines[0].split(' ')[1], 10);
			const hdrs = {};
			for (const l of lines.slice(1)) {
				const i = l.indexOf(':');
				hdrs[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
			}
			let rest = text.slice(end + 4);
			if ((hdrs['transfer-encoding'] || '').toLowerCase() === 'chunked') {
				rest = dechunk(rest);
			}
			let json = null;
			try {
				json = JSON.parse(rest);
			} catch {
				json = null;
			}
			resolve({ status, headers: hdrs, body: rest, json });
		});
	});
}

function dechunk(s) {
	let out = '';
	let i = 0;
	for (;;) {
		const nl = s.indexOf('\r\n', i);
		if (nl < 0) {
			return (out);
		}
		const n = Number.parseInt(s.slice(i, nl), 16);
		if (!Number.isFinite(n) || n === 0) {
			return (out);
		}
		out += s.slice(nl + 2, nl + 2 + n);
		i = nl + 2 + n + 2;
	}
}

/**
 * searchAs(stack, authHeaders): POST /threads/search {} through the
 * gateway with the given Authorization header values (list; [] = none).
 */
export function searchAs(stack, authValues) {
	const port = Number(new URL(stack.gatewayUrl).port);
	return (rawRequest(port, 'POST', '/threads/search',
		authValues.map((v) => ['Authorization', v]), '{}'));
}

/** bearer(stack, token): searchAs with "Bearer <token>". */
export function bearer(stack, token) {
	return (searchAs(stack, [`Bearer ${token}`]));
}

/**
 * pollUntil(what, fn, timeoutMs): calls async fn until it returns a truthy
 * value (returned) or the deadline passes (throws with the last value).
 */
export async function pollUntil(what, fn, timeoutMs = 10000, intervalMs = 50) {
	const deadline = Date.now() + timeoutMs;
	let last;
	for (;;) {
		last = await fn();
		if (last) {
			return (last);
		}
		if (Date.now() > deadline) {
			throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
		}
		await new Promise((r) => setTimeout(r, intervalMs));
	}
}
