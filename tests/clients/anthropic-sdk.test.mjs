// anthropic-sdk.test.mjs - drives triaged's /v1/messages with the official @anthropic-ai/sdk
// client, unmodified but for its base URL: a message routed among the api = anthropic
// backends (system prompt, content blocks), streamed events, a tool call (JSON and
// streamed), errors in Anthropic's shape mapped to the SDK's error classes, and what the
// backend received: its own key as x-api-key (never the client's) and anthropic-version.
// run.sh starts the mockllms + triaged and sets TRIAGE_URL and MOCK_*_URL.
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';

const base = process.env.TRIAGE_URL ?? 'http://127.0.0.1:8080';
const clientKey = 'sk-ant-client-key';
const client = new Anthropic({ baseURL: base, apiKey: clientKey, maxRetries: 0, timeout: 20000 });
const lastRequest = async (url) => (await (await fetch(`${url}/_mock/stats`)).json()).last_request;
const mockOf = (backend) => (backend === 'claude-strong' ? process.env.MOCK_CLAUDE_URL : process.env.MOCK_FAST_URL);
const tools = [{
  name: 'get_weather', description: 'The weather in a city.',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('message: routed among the Anthropic backends, what the backend got', async () => {
  const { data: m, response } = await client.messages
    .create({
      model: 'triage', max_tokens: 64, system: 'Answer with one number.',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'What is 2 + 2?' }] }],
      mock: { content: 'The answer is 4.' },
    })
    .withResponse();
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.equal(m.content[0].type, 'text');
  assert.equal(m.content[0].text, 'The answer is 4.');
  assert.equal(m.stop_reason, 'end_turn');
  assert.equal(m.usage.output_tokens, 4);
  const backend = response.headers.get('x-triage-backend');
  assert.ok(['claude-fast', 'claude-strong'].includes(backend), `x-triage-backend: ${backend}`);
  assert.ok(Number(response.headers.get('x-triage-score')) >= 0);
  assert.equal(response.headers.get('x-mock-path'), '/v1/messages');
  assert.equal(response.headers.get('x-mock-api-key'), 'sk-ant-backend-key'); // its own key
  assert.equal(response.headers.get('x-mock-anthropic-version'), '2023-06-01');
  assert.equal(response.headers.get('x-mock-auth'), null); // no Authorization at all
  const got = await lastRequest(mockOf(backend));
  assert.equal(got.model, backend === 'claude-fast' ? 'claude-haiku-mock' : 'claude-opus-mock');
  assert.equal(got.system, 'Answer with one number.');
  assert.equal(got.max_tokens, 64);
  assert.deepEqual(got.messages, [{ role: 'user', content: [{ type: 'text', text: 'What is 2 + 2?' }] }]);
});

test('message: streamed events through the SDK stream helper', async () => {
  const stream = client.messages.stream({
    model: 'triage', max_tokens: 64, messages: [{ role: 'user', content: 'Count to five.' }],
    mock: { content: 'one two three four five', chunk_delay_ms: 5 },
  });
  let text = '';
  let events = 0;
  stream.on('text', (t) => { text += t; });
  stream.on('streamEvent', () => { events++; });
  const final = await stream.finalMessage();
  assert.equal(text, 'one two three four five');
  assert.equal(final.content[0].text, 'one two three four five');
  assert.equal(final.stop_reason, 'end_turn');
  assert.equal(final.usage.output_tokens, 5);
  assert.equal(events, 10); // message_start, block start, 5 deltas, block stop, message_delta, message_stop
});

test('message: raw stream events, in order', async () => {
  const stream = await client.messages.create({
    model: 'claude-strong', max_tokens: 32, stream: true,
    messages: [{ role: 'user', content: 'hi' }], mock: { content: 'a b' },
  });
  const types = [];
  for await (const ev of stream) types.push(ev.type);
  assert.deepEqual(types, ['message_start', 'content_block_start', 'content_block_delta',
    'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);
});

test('tools: a tool_use block, then its tool_result sent back', async () => {
  const m = await client.messages.create({
    model: 'triage', max_tokens: 128, tools, tool_choice: { type: 'auto' },
    messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
    mock: { content: 'Let me look that up.', tool: { name: 'get_weather', input: { city: 'Paris' } } },
  });
  assert.equal(m.stop_reason, 'tool_use');
  const use = m.content.find((b) => b.type === 'tool_use');
  assert.equal(use.name, 'get_weather');
  assert.deepEqual(use.input, { city: 'Paris' });
  const { data: m2, response } = await client.messages
    .create({
      model: 'triage', max_tokens: 128, tools,
      messages: [
        { role: 'user', content: 'What is the weather in Paris?' },
        { role: 'assistant', content: m.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'Sunny, 21 C' }] },
      ],
      mock: { content: 'It is sunny in Paris.' },
    })
    .withResponse();
  assert.equal(m2.content[0].text, 'It is sunny in Paris.');
  const got = await lastRequest(mockOf(response.headers.get('x-triage-backend')));
  assert.deepEqual(got.tools, tools);
  assert.equal(got.messages[2].content[0].type, 'tool_result');
  assert.equal(got.messages[2].content[0].tool_use_id, use.id);
});

test('tools: streamed input_json_delta assembled by the SDK', async () => {
  const stream = client.messages.stream({
    model: 'triage', max_tokens: 128, tools,
    messages: [{ role: 'user', content: 'Weather in Oslo?' }],
    mock: { content: 'Checking.', tool: { name: 'get_weather', input: { city: 'Oslo' } } },
  });
  let json = '';
  stream.on('inputJson', (partial) => { json += partial; });
  const final = await stream.finalMessage();
  const use = final.content.find((b) => b.type === 'tool_use');
  assert.equal(final.stop_reason, 'tool_use');
  assert.deepEqual(use.input, { city: 'Oslo' });
  assert.equal(json, '{"city":"Oslo"}');
});

test('errors: Anthropic-shaped, mapped to the SDK error classes', async () => {
  // triage's own: a model no backend answers to
  await assert.rejects(
    client.messages.create({ model: 'no-such-model', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }),
    (err) => {
      assert.ok(err instanceof Anthropic.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 404);
      assert.equal(err.error?.type, 'error');
      assert.equal(err.error?.error?.type, 'not_found_error');
      return true;
    },
  );
  // an OpenAI backend named on /v1/messages: no translation, a clear 400
  await assert.rejects(
    client.messages.create({ model: 'fast', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }),
    (err) => {
      assert.ok(err instanceof Anthropic.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.match(err.error?.error?.message ?? '', /OpenAI/);
      return true;
    },
  );
  // the backend's own error, relayed as it is
  await assert.rejects(
    client.messages.create({
      model: 'triage', max_tokens: 8, messages: [{ role: 'user', content: 'x' }],
      mock: { status: 429, retry_after: 30 },
    }),
    (err) => {
      assert.ok(err instanceof Anthropic.RateLimitError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.error?.error?.type, 'rate_limit_error');
      return true;
    },
  );
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
