/**
 * The agent's key pair and certificate request, made with @peculiar/x509 over WebCrypto (no
 * hand-written ASN.1). EC P-256, the curve the protocol accepts everywhere.
 */
import { webcrypto, X509Certificate, createHash } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const Algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface KeyAndCsr {
  keyPem: string;
  csrPem: string;
}

export async function makeKeyAndCsr(serverName: string): Promise<KeyAndCsr> {
  const keys = await webcrypto.subtle.generateKey(Algorithm, true, ['sign', 'verify']) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [serverName] }],
    keys: keys as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
    signingAlgorithm: Algorithm,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: serverName }])],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`;
  return { keyPem, csrPem: csr.toString('pem') };
}

/** SHA-256 of a certificate's DER bytes, lower-case hex (the token's caFingerprint). */
export function certificateFingerprint(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');
}

/** The certificate's expiry as an ISO time. */
export function certificateNotAfter(pem: string): string {
  return new Date(new X509Certificate(pem).validTo).toISOString();
}
