// Verifies webhook deliveries with the reference `standardwebhooks` package (an
// implementation independent of onramp's). Reads one JSON object from stdin:
//   { "secrets": ["whsec_..."], "deliveries": [{ "id", "timestamp", "signature", "body" }] }
// and prints one JSON array: for each delivery, the secrets it verifies under (by index),
// or the error each refused it with. Timestamps are checked against the current time
// (the package allows five minutes), as a receiver would.
import { Webhook } from 'standardwebhooks';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const { secrets, deliveries } = JSON.parse(input);
const hooks = secrets.map((secret) => new Webhook(secret));
const results = deliveries.map((d) => {
  const headers = { 'webhook-id': d.id, 'webhook-timestamp': String(d.timestamp), 'webhook-signature': d.signature };
  const verifiedBy = [];
  const errors = [];
  hooks.forEach((hook, i) => {
    try {
      const payload = hook.verify(d.body, headers);
      if (JSON.stringify(payload) !== JSON.stringify(JSON.parse(d.body))) throw new Error('payload differs');
      verifiedBy.push(i);
    } catch (e) {
      errors.push(`${i}: ${e.message}`);
    }
  });
  return { id: d.id, verifiedBy, errors };
});
console.log(JSON.stringify(results));
