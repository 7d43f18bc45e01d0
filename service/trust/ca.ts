/**
 * The service CA: an EC P-256 key and a self-signed certificate made at init. It issues agents'
 * client certificates from their CSRs (SAN dNSName = the server name) and the agent endpoint's own
 * server certificate. Certificates are built by @peculiar/x509 over WebCrypto; nothing here encodes
 * ASN.1 by hand.
 */
import 'reflect-metadata';
import { KeyObject, createHash, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import { ErrInvalidArgument } from '../../shared/errors.js';
import { MaxCsrPemBytes } from '../../shared/protocol/schemas.js';

x509.cryptoProvider.set(webcrypto as never);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const ecdsa = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DayMs = 86_400_000;

export interface ServiceCa {
  cert: x509.X509Certificate;
  certPem: string;
  privateKey: CryptoKey;
  /** SHA-256 of the CA certificate's DER bytes, lower-case hex (pinned by agents). */
  fingerprint: string;
}

export interface IssuedCert {
  pem: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/** SHA-256 of a certificate's DER bytes, lower-case hex. */
export function certFingerprint(cert: x509.X509Certificate): string {
  return createHash('sha256').update(Buffer.from(cert.rawData)).digest('hex');
}

/** A random positive 128-bit serial, hex. */
function newSerial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f | 0x10;
  return b.toString('hex');
}

/** Makes a new CA (key and 10-year self-signed certificate); returns PEMs to store. */
export async function createCa(name: string): Promise<{ keyPem: string; certPem: string }> {
  const keys = await webcrypto.subtle.generateKey(ecdsa, true, ['sign', 'verify']) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: newSerial(),
    name: `CN=${name}`,
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + 3650 * DayMs),
    signingAlgorithm: ecdsa,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { keyPem: pkcs8Pem(keys.privateKey), certPem: pemOf(cert) };
}

/** The file that holds the previous CA's key between a CA rotation and its retirement. */
export function previousCaKeyFile(caKeyFile: string): string {
  return `${caKeyFile}.previous`;
}

/** PEM text ending in a newline, so certificates concatenate into a chain. */
function pemOf(cert: x509.X509Certificate): string {
  return `${cert.toString('pem').trimEnd()}\n`;
}

function pkcs8Pem(key: CryptoKey): string {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }) as string;
}

/** Loads a CA from its PEMs. */
export async function loadCa(keyPem: string, certPem: string): Promise<ServiceCa> {
  const cert = new x509.X509Certificate(certPem);
  const der = Buffer.from(keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, ecdsa, false, ['sign']);
  // The key must be the certificate's (a CA rotation interrupted between its two files is not).
  const probe = randomBytes(32);
  const signature = await webcrypto.subtle.sign(ecdsa, privateKey, probe);
  if (!(await webcrypto.subtle.verify(ecdsa, await cert.publicKey.export(ecdsa, ['verify']), signature, probe))) {
    throw new Error('the CA key does not match the CA certificate (an interrupted CA rotation: see docs/security.md)');
  }
  return { cert, certPem: pemOf(cert), privateKey, fingerprint: certFingerprint(cert) };
}

/** Parses and verifies a PEM CSR (its self-signature); a bad one is 'invalid_argument'. */
export async function parseCsr(pem: string): Promise<x509.Pkcs10CertificateRequest> {
  if (pem.length > MaxCsrPemBytes) throw ErrInvalidArgument(`csr longer than ${MaxCsrPemBytes} bytes`);
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch (err) {
    throw ErrInvalidArgument(`csr is not a PEM certificate request (${(err as Error).message})`, err);
  }
  let ok = false;
  try {
    ok = await csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) throw ErrInvalidArgument('csr signature does not verify (or its key type is not EC P-256/P-384 or RSA)');
  checkCsrKey(csr);
  return csr;
}

/** The key types the agent protocol allows (§3.1): RSA of 2048 to 4096 bits, EC P-256 or P-384. */
function checkCsrKey(csr: x509.Pkcs10CertificateRequest): void {
  let key;
  try {
    key = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  } catch (err) {
    throw ErrInvalidArgument('csr public key cannot be read', err);
  }
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details.modulusLength ?? 0;
    if (bits < 2048 || bits > 4096) throw ErrInvalidArgument(`csr key is RSA of ${bits} bits; RSA must have 2048 to 4096 bits (or use EC P-256/P-384)`);
    return;
  }
  if (key.asymmetricKeyType === 'ec' && (details.namedCurve === 'prime256v1' || details.namedCurve === 'secp384r1')) return;
  throw ErrInvalidArgument(`csr key type ${key.asymmetricKeyType ?? 'unknown'}${details.namedCurve ? ` ${details.namedCurve}` : ''} is not allowed: use EC P-256/P-384 or RSA of 2048 to 4096 bits`);
}

async function issue(ca: ServiceCa, subjectName: string, publicKey: x509.PublicKey | CryptoKey, sans: x509.JsonGeneralName[], usage: x509.ExtendedKeyUsage, days: number): Promise<IssuedCert> {
  const now = Date.now();
  const notBefore = new Date(now - 5 * 60_000);
  const notAfter = new Date(now + days * DayMs);
  const serial = newSerial();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: `CN=${subjectName}`,
    issuer: ca.cert.subject,
    notBefore,
    notAfter,
    signingAlgorithm: ecdsa,
    publicKey,
    signingKey: ca.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([usage]),
      new x509.SubjectAlternativeNameExtension(sans),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return { pem: pemOf(cert), serial: cert.serialNumber.toLowerCase().replace(/^0+/, ''), notBefore, notAfter };
}

/** An agent's client certificate for serverName (already validated and lower-cased). */
export async function issueClientCert(ca: ServiceCa, csr: x509.Pkcs10CertificateRequest, serverName: string, days: number): Promise<IssuedCert> {
  return issue(ca, serverName, csr.publicKey, [{ type: 'dns', value: serverName }], x509.ExtendedKeyUsage.clientAuth, days);
}

/** The agent endpoint's server certificate and its fresh key, for the names in the config. */
export async function issueServerCert(ca: ServiceCa, names: string[], days: number): Promise<{ certPem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey(ecdsa, true, ['sign', 'verify']) as CryptoKeyPair;
  const sans: x509.JsonGeneralName[] = names.map((n) => ({ type: isIP(n) ? 'ip' : 'dns', value: n }));
  const cert = await issue(ca, names[0]!, keys.publicKey, sans, x509.ExtendedKeyUsage.serverAuth, days);
  return { certPem: cert.pem, keyPem: pkcs8Pem(keys.privateKey) };
}
