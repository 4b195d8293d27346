// Verifies webhook deliveries with tools independent of onramp's: the reference
// `standardwebhooks` package checks signatures, ajv checks each payload against the JSON
// Schema of its type (docs/webhooks/<type>.schema.json). Reads one JSON object from stdin:
//   { "secrets": ["whsec_..."], "deliveries": [{ "id", "timestamp", "signature", "body" }] }
// and prints one JSON array: for each delivery, the secrets it verifies under (by index),
// the error each other secret refused it with, and the schema errors. Timestamps are
// checked against the current time (the package allows five minutes), as a receiver would.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { Webhook } from 'standardwebhooks';

const schemasDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'webhooks');
const ajv = new Ajv2020({ allErrors: true, strict: true });
addFormats(ajv);
const validators = {};
for (const file of readdirSync(schemasDir).filter((f) => f.endsWith('.schema.json'))) {
  validators[file.replace('.schema.json', '')] = ajv.compile(JSON.parse(readFileSync(join(schemasDir, file), 'utf8')));
}

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
  const payload = JSON.parse(d.body);
  const validate = validators[payload.type];
  const schemaErrors = !validate
    ? [`no schema for type ${JSON.stringify(payload.type)}`]
    : validate(payload) ? [] : validate.errors.map((e) => `${e.instancePath} ${e.message}`);
  return { id: d.id, verifiedBy, errors, schemaErrors };
});
console.log(JSON.stringify(results));
