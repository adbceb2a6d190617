// SPDX-License-Identifier: MIT
//
// A real OAuth2/OIDC server for the end-to-end tests: the npm package
// `oidc-provider` 9 (panva), in this Node process, on a free loopback
// port, configured as in ../shared/reference/identity-providers.md §4.2:
// client_credentials, resource indicators, JWT access tokens signed ES256
// or RS256 depending on the resource, opaque access tokens with RFC 7662
// introspection and RFC 7009 revocation. Keys are generated per run.

import crypto from 'node:crypto';
import http from 'node:http';

// Resource indicators (audiences) the server knows.
export const RES_ES256 = 'https://api.es256.e2e.test';
export const RES_RS256 = 'https://api.rs256.e2e.test';
export const RES_OPAQUE = 'https://api.opaque.e2e.test';

// Clients: `svc` gets tokens (client_credentials); `rs` introspects.
export const SVC = { id: 'svc', secret: 'svc-secret-e2e' };
export const RS = { id: 'rs', secret: 'rs-secret-e2e' };

// Access-token lifetime for every resource, in seconds.
const TOKEN_TTL_S = 300;

function privateJwk(type, opts, kid, alg) {
	const { privateKey } = crypto.generateKeyPairSync(type, opts);
	return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

/**
 * startOidcProvider(): resolves { issuer, jwksHits(), token(resource,
 * scope), revoke(token), close() }.
 */
export async function startOidcProvider() {
	// oidc-provider warns on Node 20 and about its dev defaults; fine here.
	const { default: Provider, errors } = await import('oidc-provider');
	let jwksHits = 0;
	let provider = null;
	const server = http.createServer((req, res) => {
		if (req.url.startsWith('/jwks')) {
			jwksHits++;
		}
		provider.callback()(req, res);
	});
	await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
	const issuer = `http://127.0.0.1:${server.address().port}`;
	provider = new Provider(issuer, {
		clients: [
			{ client_id: SVC.id, client_secret: SVC.secret, grant_types: ['client_credentials'],
				response_types: [], redirect_uris: [] },
			{ client_id: RS.id, client_secret: RS.secret, grant_types: [], response_types: [],
				redirect_uris: [] },
		],
		jwks: {
			keys: [
				privateJwk('ec', { namedCurve: 'P-256' }, 'e2e-ec-1', 'ES256'),
				privateJwk('rsa', { modulusLength: 2048 }, 'e2e-rsa-1', 'RS256'),
			],
		},
		cookies: { keys: ['e2e-only-cookie-key'] },
		features: {
			devInteractions: { enabled: false },
			clientCredentials: { enabled: true },
			introspection: { enabled: true },
			revocation: { enabled: true },
			resourceIndicators: {
				enabled: true,
				getResourceServerInfo: async (ctx, resource) => {
					if (resource === RES_ES256 || resource === RES_RS256) {
						return {
							scope: 'api:read api:write', audience: resource,
							accessTokenTTL: TOKEN_TTL_S, accessTokenFormat: 'jwt',
							jwt: { sign: { alg: resource === RES_ES256 ? 'ES256' : 'RS256' } },
						};
					}
					if (resource === RES_OPAQUE) {
						return { scope: 'api:read', audience: resource, accessTokenTTL: TOKEN_TTL_S,
							accessTokenFormat: 'opaque' };
					}
					throw new errors.InvalidTarget();
				},
			},
		},
	});
	const basic = (c) => `Basic ${Buffer.from(`${encodeURIComponent(c.id)}:${encodeURIComponent(c.secret)}`).toString('base64')}`;
	async function post(path, client, form) {
		const r = await fetch(`${issuer}${path}`, {
			method: 'POST',
			headers: { authorization: basic(client), 'content-type': 'application/x-www-form-urlencoded' },
			body: new URLSearchParams(form),
			signal: AbortSignal.timeout(10000),
		});
		const text = await r.text();
		return { status: r.status, text, json: text ? JSON.parse(text) : null };
	}
	return {
		issuer,
		jwksHits: () => jwksHits,
		async token(resource, scope = 'api:read') {
			const r = await post('/token', SVC, { grant_type: 'client_credentials', resource, scope });
			if (r.status !== 200) {
				throw new Error(`token endpoint answered ${r.status}: ${r.text}`);
			}
			return (r.json.access_token);
		},
		async revoke(token) {
			const r = await post('/token/revocation', SVC, { token });
			if (r.status !== 200) {
				throw new Error(`revocation answered ${r.status}: ${r.text}`);
			}
		},
		async introspect(token) {
			return ((await post('/token/introspection', RS, { token })).json);
		},
		async close() {
			server.closeAllConnections?.();
			await new Promise((resolve) => server.close(resolve));
		},
	};
}
