// SPDX-License-Identifier: MIT
//
// Point reads batched to the thread-service (GATEWAY_BATCH_WINDOW, default
// 1) against the real stack: bursts of concurrent GET /threads/{id} from
// two users, interleaved, for one thread the first user owns. Calls of
// different owners share Batch messages (the gateway's batched-calls
// counter grows), and each still gets its own answer: the owner 200 with
// the thread, the other user 404 - never the owner's row.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { httpJson, metricSum, metricsEnv, readPortFile, removeTmpDir, startStack, tmpDir } from './harness.mjs';

// Requests of one burst (half per user), and bursts at most: with the
// window full from the first read on, the first burst batches already.
const BURST = 200;
const BURSTS_MAX = 5;

describe('gateway: batched point reads', () => {
	let stack;
	let dir;
	let mport;
	let owner;
	let other;
	let tid;

	const batched = () => metricSum(mport, 'threadgate_gateway_upstream_batched_calls_total',
		'service="thread-service"');
	const get = (tok) => httpJson('GET', `${stack.gatewayUrl}/threads/${tid}`, {
		headers: { authorization: `Bearer ${tok}` },
	});

	before(async () => {
		dir = await tmpDir('tg-batch-');
		stack = await startStack({ gatewayEnv: metricsEnv(dir, 'gateway') });
		mport = await readPortFile(path.join(dir, 'gateway.mport'));
		owner = (await stack.signup('batch-owner@example.com', 'correct-horse-battery')).access_token;
		other = (await stack.signup('batch-other@example.com', 'correct-horse-battery')).access_token;
		const r = await httpJson('POST', `${stack.gatewayUrl}/threads`, {
			headers: { authorization: `Bearer ${owner}` }, body: { metadata: { batch: true } },
		});
		assert.equal(r.status, 200, r.text);
		tid = r.json.thread_id;
	});

	after(async () => {
		await stack?.stop();
		await removeTmpDir(dir);
	});

	test('concurrent reads of two owners share messages; each gets its own answer', async () => {
		const b0 = await batched();
		let shared = 0;
		for (let n = 0; n < BURSTS_MAX && shared === 0; n++) {
			const res = await Promise.all(Array.from({ length: BURST },
				(_, i) => get(i % 2 === 0 ? owner : other)));
			res.forEach((r, i) => {
				if (i % 2 === 0) {
					assert.equal(r.status, 200, r.text);
					assert.equal(r.json.thread_id, tid);
					assert.equal(r.json.metadata.batch, true);
				} else {
					assert.equal(r.status, 404, `another owner's read: ${r.text}`);
					assert.ok(!r.text.includes('"batch"'), r.text);
				}
			});
			shared = (await batched()) - b0;
		}
		assert.ok(shared > 0, `no read shared a message in ${BURSTS_MAX} bursts of ${BURST}`);
	});
});
