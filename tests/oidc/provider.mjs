// A real OpenID provider for the gateway's tests: panva's oidc-provider
// (OpenID Certified), served over HTTPS with the test's own certificate.
//
//   node tests/oidc/provider.mjs --cert C.pem --key K.pem [--max-age 300]
//
// Prints one JSON line on stdout once listening:
//   {"issuer": "https://127.0.0.1:P", "other_issuer": "https://127.0.0.1:Q", "kid": "..."}
// and then serves:
//   - the provider at `issuer`: discovery, /jwks, /token (client
//     credentials for client "svc" / secret below, JWT access tokens
//     for the resource indicator https://api.portcullis.test; the
//     resource urn:portcullis:short gives the same audience with a
//     2-second lifetime, urn:portcullis:other another audience);
//   - a second provider at `other_issuer`, same client, SAME signing keys
//     and kid, another issuer: its tokens must be refused for their iss;
//   - test hooks on the first server (loopback only, for the test):
//       POST /__test/rotate  a new signing key (new kid); the JWKS then
//                            publishes only it; answers {"kid": ...}
//       GET  /__test/stats   {"jwks": N, "discovery": M} requests served
// Stop it by killing the process (the test does).

import { createServer } from 'node:https';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    cert: { type: 'string' },
    key: { type: 'string' },
    'max-age': { type: 'string', default: '300' },
  },
});
if (!args.cert || !args.key) {
  console.error('usage: provider.mjs --cert CERT.pem --key KEY.pem [--max-age SECONDS]');
  process.exit(2);
}

const AUDIENCE = 'https://api.portcullis.test';
const CLIENT = { id: 'svc', secret: 'portcullis-test-client-secret-0123456789' };
const maxAge = Number(args['max-age']);

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: randomBytes(9).toString('base64url'), alg: 'RS256', use: 'sig' };
}

function makeProvider(issuer, keys) {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT.id,
      client_secret: CLIENT.secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'data:read data:write',
    }],
    jwks: { keys },
    scopes: ['data:read', 'data:write'],
    ttl: {
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 300,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          const base = {
            scope: 'data:read data:write',
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
          if (resource === AUDIENCE) return { ...base, audience: AUDIENCE, accessTokenTTL: 300 };
          if (resource === 'urn:portcullis:short') return { ...base, audience: AUDIENCE, accessTokenTTL: 2 };
          if (resource === 'urn:portcullis:other') return { ...base, audience: 'https://other.test', accessTokenTTL: 300 };
          throw new Provider.errors.InvalidTarget();
        },
      },
    },
  });
  // The default would log every error to stderr; keep them for the test log.
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

const tls = { cert: readFileSync(args.cert), key: readFileSync(args.key) };
const stats = { jwks: 0, discovery: 0 };
let keys = [newKey()];

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

// The first server: issuer, JWKS (counted, with Cache-Control), hooks.
let main = null;
const first = createServer(tls, (req, res) => {
  const path = req.url.split('?')[0];
  if (path === '/__test/rotate' && req.method === 'POST') {
    keys = [newKey()];
    main = makeProvider(issuerOf(first), keys).callback();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ kid: keys[0].kid }));
    return;
  }
  if (path === '/__test/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
    return;
  }
  if (path === '/jwks') {
    stats.jwks += 1;
    res.setHeader('cache-control', `public, max-age=${maxAge}`);
  }
  if (path === '/.well-known/openid-configuration') stats.discovery += 1;
  main(req, res);
});

let other = null;
const second = createServer(tls, (req, res) => other(req, res));

function issuerOf(server) {
  return `https://127.0.0.1:${server.address().port}`;
}

await listen(first);
await listen(second);
main = makeProvider(issuerOf(first), keys).callback();
// Same keys (same kid), another issuer.
other = makeProvider(issuerOf(second), keys).callback();
process.stdout.write(`${JSON.stringify({
  issuer: issuerOf(first),
  other_issuer: issuerOf(second),
  kid: keys[0].kid,
  client_id: CLIENT.id,
  client_secret: CLIENT.secret,
})}\n`);

// The other provider keeps the first key after a rotation: fine, its
// tokens are refused for their issuer whatever the key.
process.on('SIGTERM', () => process.exit(0));
