-- Key rotation (docs/security.md, "Rotating keys"). The current CA, signing key and master key are
-- the files under keys/; a rotation keeps what the previous one still has to do here, until it is
-- retired: the previous CA's certificate (still trusted for agents' client certificates) and the
-- previous signing key's public JWK (tokens it signed verify until they expire). Public material
-- only: the previous CA's key and master key, which are secret, stay files beside the current ones
-- (keys/ca.key.previous, keys/master.key.previous) until they are retired.
CREATE TABLE previous_service_keys (
  kind text NOT NULL CHECK (kind IN ('ca', 'signing')),
  -- ca: SHA-256 fingerprint of the certificate (hex); signing: the RFC 7638 thumbprint (kid).
  id text NOT NULL,
  -- ca: the certificate PEM; signing: the public JWK as JSON.
  material text NOT NULL,
  replaced_at timestamptz NOT NULL DEFAULT now(),
  -- The end of the overlap: after it the key is no longer accepted (retired without a command).
  retire_after timestamptz NOT NULL,
  retired_at timestamptz,
  PRIMARY KEY (kind, id)
);

-- A tenant's replica keys before its current one (tenants.replica_*): logs sealed to them before the
-- agents learned the new key are still opened with them until the key is retired. Wrapped under the
-- master key like the current one, and re-wrapped with it.
CREATE TABLE tenant_previous_keys (
  tenant text NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
  kid text NOT NULL,
  public_jwk jsonb NOT NULL,
  private_wrapped text NOT NULL,
  replaced_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, kid)
);

-- The CA that issued each agent certificate (its fingerprint): NULL for certificates issued before
-- this migration, by the CA made at init. Retiring a CA names the live certificates it still covers.
ALTER TABLE servers ADD COLUMN ca_id text;
