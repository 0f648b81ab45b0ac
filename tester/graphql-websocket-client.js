// The original tester's client, pointed at mmsub: legacy `graphql-ws` subprotocol, the JWT in
// the connection_init payload under `headers`, and `start` sent without waiting for the ack.
//
//   MMSUB_TOKEN=<jwt> node graphql-websocket-client.js [ws://127.0.0.1:8000/ws/graphql/] [town-square]
const WebSocket = require('ws');

function subscribe(url, token, channel, onMessage) {
  const ws = new WebSocket(url, 'graphql-ws');
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: 'connection_init', payload: { headers: { Authorization: `JWT ${token}` } } }));
    const query = `subscription subscription{ onNewChatMessage(channelIdentifier:"${channel}"){ message{ id message createAt owner{ username } } } }`;
    ws.send(JSON.stringify({ id: '1', type: 'start', payload: { query } }));
  };
  ws.onmessage = (event) => onMessage(JSON.parse(event.data));
  return ws;
}

module.exports = { subscribe };

if (require.main === module) {
  const url = process.argv[2] || 'ws://127.0.0.1:8000/ws/graphql/';
  const channel = process.argv[3] || 'town-square';
  const token = process.env.MMSUB_TOKEN;
  if (!token) {
    console.error('Set MMSUB_TOKEN to a token from tokenAuth or userGetToken.');
    process.exit(2);
  }
  const ws = subscribe(url, token, channel, (message) => console.log('Received:', JSON.stringify(message)));
  ws.onerror = (error) => console.error('WebSocket Error:', error.message);
  ws.onclose = (event) => console.log('Connection closed', event.code, event.reason);
}
