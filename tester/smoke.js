// End-to-end check with real JavaScript clients against a running mmsub:
// 1. the original tester's flow (legacy `graphql-ws`, JWT in connection_init headers), and
// 2. the standard `graphql-ws` npm client (graphql-transport-ws),
// both subscribe to town-square; a message sent by textMessageSend must reach both.
//
//   node smoke.js http://127.0.0.1:8000
const { getIntrospectionQuery } = require('graphql');
const { createClient } = require('graphql-ws');
const WebSocket = require('ws');
const { subscribe: legacySubscribe } = require('./graphql-websocket-client');

const base = (process.argv[2] || 'http://127.0.0.1:8000').replace(/\/$/, '');
const wsUrl = base.replace(/^http/, 'ws') + '/ws/graphql/';
const deadline = setTimeout(() => fail('timed out after 20 s'), 20000);

function fail(reason) {
  console.error(`tester smoke: FAILED: ${reason}`);
  process.exit(1);
}

async function graphql(query, variables, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `JWT ${token}`;
  const response = await fetch(`${base}/graphql/`, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  const body = await response.json();
  if (body.errors) fail(JSON.stringify(body.errors));
  return body.data;
}

async function main() {
  // What GraphiQL sends on load: the default limits must admit it.
  const schema = await graphql(
    getIntrospectionQuery({ descriptions: true, specifiedByUrl: true, directiveIsRepeatable: true, schemaDescription: true, inputValueDeprecation: true }),
    {},
  );
  if (schema.__schema.subscriptionType.name !== 'Subscription') fail('introspection lacks the Subscription type');
  console.log('tester smoke: the GraphiQL introspection query passes the default limits');
  const username = `js${Date.now().toString(36)}`;
  const password = 'Str0ng!Pass';
  const created = await graphql(
    'mutation($u: String!, $p: String!, $e: String!) { userCreate(username: $u, password: $p, email: $e) { statusCode message } }',
    { u: username, p: password, e: `${username}@example.com` },
  );
  if (created.userCreate.statusCode !== 200) fail(created.userCreate.message);
  const login = await graphql(
    'mutation($u: String!, $p: String!) { userGetToken(username: $u, password: $p) { ... on ResponseWithToken { token } } }',
    { u: username, p: password },
  );
  const token = login.userGetToken.token;
  const text = `hello from node ${Date.now()}`;
  const received = { legacy: false, standard: false };
  const done = () => {
    if (received.legacy && received.standard) {
      console.log('tester smoke: legacy graphql-ws and standard graphql-transport-ws clients both received the message');
      clearTimeout(deadline);
      process.exit(0);
    }
  };

  let legacyReady = false;
  legacySubscribe(wsUrl, token, 'town-square', (message) => {
    if (message.type === 'ka') legacyReady = true;
    if (message.type === 'data' && message.payload.data.onNewChatMessage.message.message === text) {
      received.legacy = true;
      done();
    }
    if (message.type === 'error' || message.type === 'connection_error') fail(`legacy: ${JSON.stringify(message)}`);
  });

  const client = createClient({ url: wsUrl, webSocketImpl: WebSocket, connectionParams: { Authorization: `JWT ${token}` }, retryAttempts: 0 });
  client.subscribe(
    { query: 'subscription($c: String!) { onNewChatMessage(channelIdentifier: $c) { message { message owner { username } } } }', variables: { c: 'town-square' } },
    {
      next: (result) => {
        if (result.data.onNewChatMessage.message.message === text) {
          received.standard = true;
          done();
        }
      },
      error: (error) => fail(`graphql-ws client: ${JSON.stringify(error.message || error)}`),
      complete: () => {},
    },
  );

  // Send once both subscriptions are registered on the server.
  for (let i = 0; i < 200; i++) {
    const ready = await (await fetch(`${base}/readyz`)).json();
    if (legacyReady && ready.subscriptions >= 2) break;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  const sent = await graphql(
    'mutation($c: String!, $t: String!) { textMessageSend(channelIdentifier: $c, textMessage: $t) { statusCode message } }',
    { c: 'town-square', t: text },
    token,
  );
  if (sent.textMessageSend.statusCode !== 200) fail(sent.textMessageSend.message);
}

main().catch((error) => fail(error.stack || String(error)));
