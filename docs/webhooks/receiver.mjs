// A webhook receiver that verifies onramp's signatures (Standard Webhooks) and drops
// repeats. Node 20+, `npm install standardwebhooks`; run with
//   WEBHOOK_SECRET=whsec_... PORT=9000 node receiver.mjs
import { createServer } from 'node:http';
import { Webhook } from 'standardwebhooks';

const webhook = new Webhook(process.env.WEBHOOK_SECRET);
// Deliveries are at least once: the same webhook-id may arrive again. A real receiver
// keeps these ids in its database, with a unique key.
const seen = new Set();

createServer((req, res) => {
  let body = '';
  req.on('data', (chunk) => (body += chunk));
  req.on('end', () => {
    let event;
    try {
      // Checks the HMAC over "{webhook-id}.{webhook-timestamp}.{body}" and that the
      // timestamp is within five minutes; the raw body, not a re-serialized one.
      event = webhook.verify(body, req.headers);
    } catch (error) {
      res.writeHead(400).end(`bad signature: ${error.message}`);
      return;
    }
    const id = req.headers['webhook-id'];
    if (!seen.has(id)) {
      seen.add(id);
      console.log(JSON.stringify({ id, type: event.type, data: event.data }));
    }
    res.writeHead(204).end(); // any 2xx within 15 s is a success
  });
}).listen(Number(process.env.PORT ?? 9000), '127.0.0.1');
