// The GraphQL-over-HTTP audit of the `graphql-http` package (the spec's reference
// implementation), run against a server: prints one JSON object with every audit's result.
// Usage: TOKEN=... node tests/js/audit.mjs http://127.0.0.1:PORT/graphql
// TOKEN, when set, goes out as a bearer token with every request (some audits introspect
// `__type`, which a production server allows only to admins, when configured to).
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
const token = process.env.TOKEN;
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers);
  if (token) headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};
const results = [];
for (const audit of serverAudits({ url, fetchFn })) {
  const result = await audit.fn();
  results.push({ name: audit.name, status: result.status, reason: result.reason ?? null });
}
console.log(JSON.stringify(results));
