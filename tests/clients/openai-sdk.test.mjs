// openai-sdk.test.mjs - drives triaged with the official openai npm client: plain and streamed
// completions, usage in streams, an error mapped to the SDK's error class, and triage's
// routing headers read through the raw response. run.sh starts mockllm + triaged and sets
// TRIAGE_URL (the daemon's base URL); TRIAGE_HEADERS=0 skips the x-triage-* checks (to run
// against mockllm alone).
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const base = process.env.TRIAGE_URL ?? 'http://127.0.0.1:8080';
const checkHeaders = process.env.TRIAGE_HEADERS !== '0';
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: process.env.TRIAGE_KEY ?? 'sk-test', maxRetries: 0, timeout: 20000 });
const messages = [{ role: 'user', content: 'What is 2 + 2? Answer with one number.' }];

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('non-streaming completion', async () => {
  const r = await client.chat.completions.create({
    model: 'triage', messages, mock: { content: 'The answer is 4.' },
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, 'The answer is 4.');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.completion_tokens, 4);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 4);
});

test('streaming completion', async () => {
  const stream = await client.chat.completions.create({
    model: 'triage', messages, stream: true,
    mock: { content: 'one two three four five six', chunk_delay_ms: 5 },
  });
  let text = '';
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.usage ?? null, null); // no usage unless asked for
    const c = chunk.choices[0];
    if (c?.delta?.content) {
      text += c.delta.content;
      chunks++;
    }
    if (c?.finish_reason) finish = c.finish_reason;
  }
  assert.equal(text, 'one two three four five six');
  assert.equal(chunks, 6);
  assert.equal(finish, 'stop');
});

test('stream_options.include_usage', async () => {
  const stream = await client.chat.completions.create({
    model: 'triage', messages, stream: true, stream_options: { include_usage: true },
    mock: { chunks: 7 },
  });
  let last = null;
  let content = 0;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) content++;
    last = chunk;
  }
  assert.equal(content, 7);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 7);
  assert.ok(last.usage.prompt_tokens > 0);
});

test('backend error raises the SDK error class', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'triage', messages, mock: { status: 400 } }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 400);
      assert.ok(err.error?.message || err.message);
      return true;
    },
  );
});

test('routing headers through the raw response', async () => {
  const { data, response } = await client.chat.completions
    .create({ model: 'triage', messages, mock: { content: 'ok' } })
    .withResponse();
  assert.equal(data.choices[0].message.content, 'ok');
  assert.equal(response.status, 200);
  if (!checkHeaders) {
    assert.equal(response.headers.get('x-mock-model') !== null, true);
    return;
  }
  const backend = response.headers.get('x-triage-backend');
  const score = Number(response.headers.get('x-triage-score'));
  assert.ok(['fast', 'strong'].includes(backend), `x-triage-backend: ${backend}`);
  assert.ok(score >= 0 && score <= 1, `x-triage-score: ${score}`);

  // an explicit backend name passes through untouched
  const pinned = await client.chat.completions
    .create({ model: 'strong', messages, mock: { content: 'ok' } })
    .withResponse();
  assert.equal(pinned.response.headers.get('x-triage-backend'), 'strong');
});

test('fields triage does not use reach the backend untouched', async () => {
  const tools = [{ type: 'function', function: { name: 'lookup', description: 'Look a word up.',
    parameters: { type: 'object', properties: { word: { type: 'string' } }, required: ['word'] } } }];
  const parts = [{ role: 'user', content: [{ type: 'text', text: 'Describe this.' },
    { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] }];
  const extra = { tools, tool_choice: 'auto', n: 2, max_completion_tokens: 77, seed: 11,
    response_format: { type: 'json_object' }, metadata: { team: 'search' }, user: 'u-42',
    logit_bias: { 50256: -100 }, x_vendor_option: { deep: [1, 'two', null] } };
  for (const model of ['fast', 'triage']) {
    await client.chat.completions.create({ model, messages: parts, ...extra });
    const stats = await (await fetch(`${process.env.MOCK_FAST_URL}/_mock/stats`)).json();
    const got = stats.last_request;
    if (model === 'triage' && got.model !== 'mock-fast') continue; // routed to the other mock
    assert.equal(got.model, 'mock-fast'); // the one field triage rewrites
    assert.deepEqual(got.messages, parts);
    for (const [k, v] of Object.entries(extra)) assert.deepEqual(got[k], v, k);
  }
});

let failed = 0;
for (const { name, fn } of tests) {
  try {
    await fn();
    console.log(`ok - ${name}`);
  } catch (err) {
    failed++;
    console.log(`not ok - ${name}\n  ${String(err?.stack ?? err).split('\n').join('\n  ')}`);
  }
}
console.log(`${tests.length - failed}/${tests.length} passed`);
process.exit(failed ? 1 : 0);
