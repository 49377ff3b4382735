// TEST-ONLY OpenID Connect provider for lakehouse-api integration tests (oidc-provider, in-memory, loopback only).
//
// Environment:
//   OIDC_PORT      port to listen on (127.0.0.1 only); the issuer is http://127.0.0.1:${OIDC_PORT}
//   OIDC_KEYS      path to a JSON file {"keys": [private JWKs]} (see tests/fixtures/oidc/keys.json); exactly these
//                  keys are published at the jwks_uri, and each alg is signed with the FIRST key of that alg
//   OIDC_AUDIENCE  resource indicator and "aud" of every access token, e.g. https://api.lakehouse.test
//   OIDC_PARENT_PID  optional: exit once this process is gone
//
// Prints one line "ready" to stdout once listening; exits 0 on SIGTERM.
//
// Test-only helper routes (not part of OIDC):
//   GET /__test/client-token?client=<id>      client_credentials POST /token for that client; the token endpoint's JSON
//   GET /__test/customer-token?login=<name>   full authorization-code + PKCE flow for mobile-app as user <name>;
//                                             the token endpoint's JSON
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

// oidc-provider prints its notices with console.info; stdout is reserved for the single "ready" line.
console.info = console.error;

const PORT = Number(process.env.OIDC_PORT);
const AUDIENCE = process.env.OIDC_AUDIENCE;
if (!PORT || !AUDIENCE || !process.env.OIDC_KEYS) {
  console.error('OIDC_PORT, OIDC_KEYS and OIDC_AUDIENCE must be set');
  process.exit(2);
}
const { keys } = JSON.parse(readFileSync(process.env.OIDC_KEYS, 'utf8'));
const ISSUER = `http://127.0.0.1:${PORT}`;
const REDIRECT_URI = 'http://127.0.0.1/callback'; // never served: the flow stops at this redirect

// Per client: access-token signing alg and the Keycloak-style realm roles put in its access tokens.
const CLIENTS = {
  'branch-tool': { secret: 'branch-tool-secret', alg: 'RS256', roles: ['lakehouse-staff', 'offline_access'] },
  'etl-pipeline': { secret: 'etl-pipeline-secret', alg: 'ES256', roles: ['lakehouse-etl'] },
  'risk-job': { secret: 'risk-job-secret', alg: 'EdDSA', roles: ['lakehouse-analyst'] },
  'no-role': { secret: 'no-role-secret', alg: 'RS256', roles: ['offline_access'] },
  'mobile-app': { alg: 'RS256', roles: ['lakehouse-customer'] }, // public client, signed-in customers
};

const clients = Object.entries(CLIENTS).map(([id, { secret }]) => (secret
  ? {
    client_id: id,
    client_secret: secret, // registered as client_secret_basic; oidc-provider 8 also accepts client_secret_post
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  }
  : {
    client_id: id,
    application_type: 'native', // allows the http loopback redirect_uri
    token_endpoint_auth_method: 'none', // public client, so oidc-provider requires PKCE (S256)
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [REDIRECT_URI],
  }));

const provider = new Provider(ISSUER, {
  clients,
  jwks: { keys },
  features: {
    // The built-in login/consent pages: any login name, any password. Driven by /__test/customer-token.
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Requests without `resource` (at /auth or /token) still get a JWT for OIDC_AUDIENCE.
      defaultResource: () => AUDIENCE,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, resourceIndicator, client) {
        if (resourceIndicator !== AUDIENCE) throw new errors.InvalidTarget();
        const { alg } = CLIENTS[client.clientId];
        // Pin the kid ourselves so the FIRST key of that alg in OIDC_KEYS signs (key-rotation tests rely on it).
        const kid = keys.find((key) => key.alg === alg)?.kid;
        return {
          scope: 'api',
          audience: AUDIENCE,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg, kid } },
        };
      },
    },
  },
  extraTokenClaims(ctx, token) {
    return { realm_access: { roles: CLIENTS[token.clientId].roles } };
  },
});

// --- test-only helper routes -------------------------------------------------------------------------------------

async function tokenRequest(form, headers = {}) {
  const res = await fetch(`${ISSUER}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form),
  });
  return { status: res.status, body: await res.text() };
}

function clientToken(clientId) {
  const secret = CLIENTS[clientId]?.secret;
  if (!secret) return { status: 400, body: JSON.stringify({ error: `unknown confidential client: ${clientId}` }) };
  const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64');
  return tokenRequest(
    { grant_type: 'client_credentials', scope: 'api', resource: AUDIENCE },
    { authorization: `Basic ${basic}` },
  );
}

// A user agent for one flow: fetch without following redirects, plus a cookie jar keyed by name (enough here).
function userAgent() {
  const jar = new Map();
  return async (url, init = {}) => {
    const cookie = [...jar].map(([name, value]) => `${name}=${value}`).join('; ');
    const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...init.headers, cookie } });
    for (const setCookie of res.headers.getSetCookie()) {
      const [pair] = setCookie.split(';');
      const eq = pair.indexOf('=');
      const [name, value] = [pair.slice(0, eq).trim(), pair.slice(eq + 1)];
      if (value) jar.set(name, value); else jar.delete(name); // cleared cookies come back empty
    }
    return res;
  };
}

async function customerToken(login) {
  if (!login) return { status: 400, body: JSON.stringify({ error: 'login is required' }) };
  const browse = userAgent();
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(16).toString('base64url');
  const auth = new URL(`${ISSUER}/auth`);
  auth.search = new URLSearchParams({
    response_type: 'code',
    client_id: 'mobile-app',
    redirect_uri: REDIRECT_URI,
    scope: 'openid api',
    resource: AUDIENCE,
    state,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  });

  // /auth -> /interaction/:uid (login form) -> /auth/:uid -> /interaction/:uid (consent form) -> /auth/:uid
  // -> 303 to redirect_uri?code=...; bounded so a misbehaving flow cannot loop.
  let res = await browse(auth);
  for (let step = 0; step < 12; step += 1) {
    if (res.status >= 300 && res.status < 400) {
      const location = new URL(res.headers.get('location'), ISSUER);
      if (location.href.startsWith(`${REDIRECT_URI}?`)) {
        const { code, error, error_description: description } = Object.fromEntries(location.searchParams);
        if (!code) return { status: 502, body: JSON.stringify({ error, error_description: description }) };
        if (location.searchParams.get('state') !== state) throw new Error('state mismatch');
        return tokenRequest({
          grant_type: 'authorization_code',
          client_id: 'mobile-app',
          code,
          code_verifier: verifier,
          redirect_uri: REDIRECT_URI,
          resource: AUDIENCE,
        });
      }
      res = await browse(location);
    } else if (res.status === 200) {
      // An interaction page: submit its form as a person would (login form or consent "Continue").
      const html = await res.text();
      const action = html.match(/<form[^>]* action="([^"]+)"/)?.[1];
      const prompt = html.match(/name="prompt" value="([^"]+)"/)?.[1];
      if (!action || !prompt) throw new Error(`unexpected interaction page: ${html.slice(0, 300)}`);
      const form = prompt === 'login' ? { prompt, login, password: 'any-password' } : { prompt };
      res = await browse(new URL(action, ISSUER), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(form),
      });
    } else {
      throw new Error(`unexpected ${res.status} from ${res.url}: ${(await res.text()).slice(0, 300)}`);
    }
  }
  throw new Error('authorization flow did not reach the redirect_uri');
}

async function testRoute(req, res) {
  const url = new URL(req.url, ISSUER);
  let result;
  try {
    if (req.method === 'GET' && url.pathname === '/__test/client-token') {
      result = await clientToken(url.searchParams.get('client'));
    } else if (req.method === 'GET' && url.pathname === '/__test/customer-token') {
      result = await customerToken(url.searchParams.get('login'));
    } else {
      result = { status: 404, body: JSON.stringify({ error: 'not found' }) };
    }
  } catch (err) {
    result = { status: 500, body: JSON.stringify({ error: String(err?.message ?? err) }) };
  }
  res.writeHead(result.status, { 'content-type': 'application/json' }).end(result.body);
}

// --- server ------------------------------------------------------------------------------------------------------

const oidc = provider.callback();
const server = createServer((req, res) => (req.url.startsWith('/__test/') ? testRoute(req, res) : oidc(req, res)));
server.listen(PORT, '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => process.exit(0));

// OIDC_PARENT_PID: exit when the test process that started us is gone (killed mid-test), so no
// provider outlives its tests.
const parent = Number(process.env.OIDC_PARENT_PID);
if (parent) {
  setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch {
      process.exit(0);
    }
  }, 1000).unref();
}
