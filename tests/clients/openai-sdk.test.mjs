// openai-sdk.test.mjs - drives triaged with the official openai npm client: chat (plain and
// streamed, usage in streams, an error mapped to the SDK's error class, triage's routing
// headers read through the raw response), the Responses API (JSON, streamed typed events,
// a previous_response_id follow-up kept where its state is), legacy completions and
// embeddings. run.sh starts the mockllms + triaged and sets TRIAGE_URL (the daemon's base
// URL) and MOCK_*_URL; TRIAGE_HEADERS=0 skips the x-triage-* checks (to run against
// mockllm alone).
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

const lastRequest = async (url) => (await (await fetch(`${url}/_mock/stats`)).json()).last_request;

test('responses: JSON, routed on input and instructions', async () => {
  const { data: r, response } = await client.responses
    .create({
      model: 'triage', instructions: 'Answer with one number.',
      input: [{ role: 'user', content: [{ type: 'input_text', text: 'What is 2 + 2?' }] }],
      max_output_tokens: 20, mock: { content: 'The answer is 4.' },
    })
    .withResponse();
  assert.equal(r.object, 'response');
  assert.equal(r.status, 'completed');
  assert.equal(r.output_text, 'The answer is 4.'); // the SDK's own reading of the output items
  assert.equal(r.usage.output_tokens, 4);
  assert.ok(r.id.startsWith('resp_'));
  if (!checkHeaders) return;
  const backend = response.headers.get('x-triage-backend');
  assert.ok(['fast', 'strong'].includes(backend), `x-triage-backend: ${backend}`);
  assert.ok(response.headers.get('x-triage-score') !== null);
  assert.equal(response.headers.get('x-mock-path'), '/v1/responses');
  const got = await lastRequest(backend === 'fast' ? process.env.MOCK_FAST_URL : process.env.MOCK_STRONG_URL);
  assert.equal(got.model, backend === 'fast' ? 'mock-fast' : 'mock-strong');
  assert.equal(got.instructions, 'Answer with one number.');
  assert.equal(got.max_output_tokens, 20);
  assert.deepEqual(got.input, [{ role: 'user', content: [{ type: 'input_text', text: 'What is 2 + 2?' }] }]);
});

test('responses: streamed typed events, as the backend sent them', async () => {
  const stream = await client.responses.create({
    model: 'triage', input: 'Count to five.', stream: true,
    mock: { content: 'one two three four five', chunk_delay_ms: 5 },
  });
  const types = [];
  let text = '';
  let done = null;
  let seq = -1;
  for await (const ev of stream) {
    types.push(ev.type);
    assert.ok(ev.sequence_number > seq, 'sequence numbers rise');
    seq = ev.sequence_number;
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') done = ev.response;
  }
  assert.equal(text, 'one two three four five');
  assert.equal(types[0], 'response.created');
  assert.equal(types.at(-1), 'response.completed');
  assert.equal(types.filter((t) => t === 'response.output_text.delta').length, 5);
  assert.equal(done.status, 'completed');
  assert.equal(done.usage.output_tokens, 5);
});

test('responses: the stream helper and a follow-up on the backend that holds the state', async () => {
  const first = client.responses.stream({
    model: 'triage', input: 'Prove that the eigenvalue series converges.', mock: { content: 'Proof sketch.' },
  });
  let deltas = '';
  first.on('response.output_text.delta', (ev) => { deltas += ev.delta; });
  const final = await first.finalResponse();
  assert.equal(deltas, 'Proof sketch.');
  assert.equal(final.output[0].content[0].text, 'Proof sketch.');
  // follow-ups name only the previous response: triage sends them where it was answered
  let prev = final.id;
  for (let i = 0; i < 3; i++) {
    const { data: r, response } = await client.responses
      .create({ model: 'triage', input: `And step ${i}?`, previous_response_id: prev, mock: { content: `step ${i}` } })
      .withResponse();
    assert.equal(r.output_text, `step ${i}`);
    assert.equal(r.previous_response_id, prev); // the mock that holds prev answered
    if (checkHeaders) assert.equal(response.headers.get('x-triage-route'), 'previous_response');
    prev = r.id;
  }
  // an id triage never saw is refused before any backend is asked
  await assert.rejects(
    client.responses.create({ model: 'triage', input: 'x', previous_response_id: 'resp_from_elsewhere' }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.code, 'previous_response_not_found');
      return true;
    },
  );
});

test('completions: routed on the prompt, JSON and stream', async () => {
  const r = await client.completions.create({
    model: 'triage', prompt: 'Say this is a test', max_tokens: 7, mock: { content: 'This is a test' },
  });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].text, 'This is a test');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.completion_tokens, 4);
  const stream = await client.completions.create({
    model: 'fast', prompt: ['Say', 'this'], stream: true, mock: { content: 'a b c' },
  });
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    assert.equal(chunk.usage ?? null, null); // the usage triage asked for is not shown
  }
  assert.equal(text, 'a b c');
  assert.equal(finish, 'stop');
  const got = await lastRequest(process.env.MOCK_FAST_URL);
  assert.deepEqual(got.prompt, ['Say', 'this']);
  assert.equal(got.model, 'mock-fast');
});

test('embeddings: passed through to the backend the model names', async () => {
  const { data: r, response } = await client.embeddings
    .create({ model: 'embed', input: ['hello', 'world'], dimensions: 6 })
    .withResponse();
  assert.equal(r.data.length, 2);
  assert.equal(r.data[0].embedding.length, 6); // the SDK asked for base64 and decoded it
  assert.ok(r.data[0].embedding.every((x) => Number.isFinite(x) && x >= -1 && x <= 1));
  assert.notDeepEqual(r.data[0].embedding, r.data[1].embedding);
  assert.ok(r.usage.prompt_tokens > 0);
  const got = await lastRequest(process.env.MOCK_FAST_URL);
  assert.equal(got.model, 'text-embedding-mock');
  assert.deepEqual(got.input, ['hello', 'world']);
  assert.equal(got.encoding_format, 'base64');
  if (checkHeaders) {
    assert.equal(response.headers.get('x-triage-route'), 'passthrough');
    assert.equal(response.headers.get('x-triage-score'), null);
  }
  const floats = await client.embeddings.create({ model: 'embed', input: 'hello', encoding_format: 'float', dimensions: 6 });
  assert.deepEqual(floats.data[0].embedding.map((x) => x.toFixed(5)), r.data[0].embedding.map((x) => x.toFixed(5)));
  // embeddings are never routed: an alias is a clear 400
  await assert.rejects(client.embeddings.create({ model: 'triage', input: 'x' }), (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.equal(err.code, 'not_routed');
    return true;
  });
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
