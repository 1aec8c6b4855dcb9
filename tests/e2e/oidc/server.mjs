// A real OpenID provider (panva/oidc-provider) for the portcullis end-to-end suite.
//
// Usage: node server.mjs [--port 4000] [--host 127.0.0.1]
//        (or env OIDC_PORT / OIDC_HOST)
//
// Issuer: http://<host>:<port>   (discovery at /.well-known/openid-configuration)
//
// What it offers (all values below are TEST FIXTURES, never use them elsewhere):
//   * confidential client `e2e-client` / `e2e-client-secret`, grant client_credentials,
//     auth client_secret_basic or client_secret_post;
//   * confidential client `e2e-introspector` / `e2e-introspector-secret` (a resource server
//     that may call the introspection endpoint; it may also use client_credentials);
//   * resource indicator `https://api.portcullis.test/` (scopes `read:data write:data admin:data`):
//     client_credentials with `resource=https://api.portcullis.test/` returns a JWT access
//     token (RS256, typ `at+jwt`, aud = the indicator, sub = client_id);
//   * resource indicator `https://opaque.portcullis.test/` (same scopes): the same grant returns
//     an OPAQUE access token (stored in memory, checkable at the introspection endpoint);
//   * introspection (RFC 7662) at POST /token/introspection (client authentication required);
//   * a Keycloak/Okta-style introspection at POST /introspect-jwt that also answers for the JWT
//     access tokens (oidc-provider's own endpoint refuses structured tokens): e2e-introspector with
//     client_secret_basic; a JWT signed by this provider's key, of this issuer and not expired, is
//     `active` with its claims; anything else is `active: false`.
//   * DPoP (RFC 9449): a token request with a `DPoP` proof gets a DPoP-bound access token (the JWT
//     carries `cnf.jkt`); dpop-client.mjs (npm `dpop`) is such a client.
//
// Signing keys: a fresh RSA-2048 key is generated at every start (nothing private is committed).
// When ready it prints one line to stdout: `READY http://<host>:<port>`.

import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.OIDC_PORT ?? '4000' },
    host: { type: 'string', default: process.env.OIDC_HOST ?? '127.0.0.1' },
  },
});
const port = Number.parseInt(args.port, 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`invalid --port ${args.port}`);
  process.exit(2);
}
const issuer = `http://${args.host}:${port}`;

const RESOURCE_SCOPES = 'read:data write:data admin:data';
const RESOURCE_SERVERS = {
  'https://api.portcullis.test/': 'jwt',
  'https://opaque.portcullis.test/': 'opaque',
};

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `e2e-rsa-${crypto.randomBytes(4).toString('hex')}`,
  alg: 'RS256',
  use: 'sig',
};

const configuration = {
  clients: [
    {
      client_id: 'e2e-client',
      client_secret: 'e2e-client-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'e2e-client-post',
      client_secret: 'e2e-client-post-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
    },
    {
      client_id: 'e2e-introspector',
      client_secret: 'e2e-introspector-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [signingJwk] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: { enabled: true },
    introspection: {
      enabled: true,
      // Only authenticated confidential clients may introspect (default policy would also
      // allow public clients for their own tokens; this provider has none).
      allowedPolicy: async (ctx, client) => client.clientAuthMethod !== 'none',
    },
    resourceIndicators: {
      enabled: true,
      // No default resource: a client_credentials request without `resource` gets an
      // opaque token without audience.
      defaultResource: async () => undefined,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        const format = RESOURCE_SERVERS[resourceIndicator];
        if (!format) throw new errors.InvalidTarget();
        return {
          scope: RESOURCE_SCOPES,
          audience: resourceIndicator,
          accessTokenTTL: 600,
          accessTokenFormat: format,
          ...(format === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
        };
      },
    },
  },
  // Nothing in this suite uses interactive flows; keep the surface minimal.
  responseTypes: ['none'],
  ttl: {
    ClientCredentials: 600,
    AccessToken: 600,
  },
};

const provider = new Provider(issuer, configuration);

const publicKey = crypto.createPublicKey(privateKey);
const introspectorBasic = `Basic ${Buffer.from('e2e-introspector:e2e-introspector-secret').toString('base64')}`;

// The claims of an RS256 JWT this provider signed, of this issuer and not expired; else null.
function ownJwtClaims(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    const signed = crypto.verify(
      'RSA-SHA256',
      Buffer.from(`${parts[0]}.${parts[1]}`),
      publicKey,
      Buffer.from(parts[2], 'base64url'),
    );
    const fresh = typeof payload.exp === 'number' && payload.exp > Date.now() / 1000;
    return header.alg === 'RS256' && signed && payload.iss === issuer && fresh ? payload : null;
  } catch {
    return null;
  }
}

provider.use(async (ctx, next) => {
  if (ctx.path !== '/introspect-jwt' || ctx.method !== 'POST') {
    return next();
  }
  if (ctx.get('authorization') !== introspectorBasic) {
    ctx.status = 401;
    ctx.body = { error: 'invalid_client' };
    return undefined;
  }
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  const token = new URLSearchParams(Buffer.concat(chunks).toString()).get('token') ?? '';
  const claims = ownJwtClaims(token);
  ctx.body = claims ? { ...claims, active: true } : { active: false };
  return undefined;
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description ?? ''));

const server = provider.listen(port, args.host, () => {
  console.log(`READY ${issuer}`);
});
server.on('error', (err) => {
  console.error(`listen failed: ${err.message}`);
  process.exit(1);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
