// Regenerates the TEST-ONLY signing keys in tests/fixtures/oidc/ (never use them anywhere else).
// Usage: node tests/oidc/genkeys.mjs   (rewrites keys.json and the <kid>.pem / <kid>.pub.pem files)
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';

const dir = new URL('../fixtures/oidc/', import.meta.url);
const specs = [
  ['rsa-a', 'RS256', 'rsa', { modulusLength: 2048 }],
  ['ec-a', 'ES256', 'ec', { namedCurve: 'P-256' }],
  ['ed-a', 'EdDSA', 'ed25519', {}],
  ['rsa-b', 'RS256', 'rsa', { modulusLength: 2048 }],
  ['rsa-x', 'RS256', 'rsa', { modulusLength: 2048 }], // never published by the provider: "unknown kid"
];

const keys = specs.map(([kid, alg, type, options]) => {
  const { privateKey, publicKey } = generateKeyPairSync(type, options);
  writeFileSync(new URL(`${kid}.pem`, dir), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFileSync(new URL(`${kid}.pub.pem`, dir), publicKey.export({ type: 'spki', format: 'pem' }));
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
});
writeFileSync(new URL('keys.json', dir), `${JSON.stringify({ keys }, null, 2)}\n`);
