// A DPoP client for the portcullis end-to-end suite, with npm `dpop` (panva): it makes a key pair, gets
// a DPoP-bound access token from oidc-provider (client_credentials, a proof for the token endpoint), and
// prints proofs for the requests the test will send.
//
// Usage: node dpop-client.mjs --issuer URL --client-id ID --client-secret S --resource R --scope S
//                             [--proof 'METHOD URL']...
// Prints one JSON line: {"token_type": "...", "access_token": "...", "proofs": ["..."]}.

import { parseArgs } from 'node:util';

import { generateKeyPair, generateProof } from 'dpop';

const { values: args } = parseArgs({
  options: {
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    resource: { type: 'string' },
    scope: { type: 'string', default: 'read:data' },
    proof: { type: 'string', multiple: true, default: [] },
  },
});

const keypair = await generateKeyPair('ES256');
const tokenEndpoint = `${args.issuer}/token`;

async function requestToken(nonce) {
  const body = new URLSearchParams({
    grant_type: 'client_credentials',
    scope: args.scope,
    resource: args.resource,
  });
  const basic = Buffer.from(`${args['client-id']}:${args['client-secret']}`).toString('base64');
  return fetch(tokenEndpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${basic}`,
      dpop: await generateProof(keypair, tokenEndpoint, 'POST', nonce),
    },
    body,
  });
}

let response = await requestToken();
if (response.status === 400 && response.headers.get('dpop-nonce')) {
  response = await requestToken(response.headers.get('dpop-nonce'));
}
const answer = await response.json();
if (response.status !== 200) {
  console.error(`token endpoint: ${response.status} ${JSON.stringify(answer)}`);
  process.exit(1);
}

const proofs = [];
for (const spec of args.proof) {
  const [method, url] = spec.split(' ', 2);
  proofs.push(await generateProof(keypair, url, method, undefined, answer.access_token));
}
console.log(JSON.stringify({ token_type: answer.token_type, access_token: answer.access_token, proofs }));
