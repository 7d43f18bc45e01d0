-- Local users of the tenant portal: a tenant's users (tenant-admin, tenant-operator, tenant-viewer)
-- belong to one tenant; the hoster's users (hoster-admin, hoster-operator) to none. Passwords are
-- argon2id hashes in their PHC string; a user made without a password signs in only after a reset
-- link. Sessions are kept in Redis (docs/portal.md), not here.

CREATE TABLE portal_users (
  id bigserial PRIMARY KEY,
  username text NOT NULL UNIQUE,
  tenant text REFERENCES tenants(name) ON DELETE CASCADE,
  role text NOT NULL CHECK (role IN ('hoster-admin', 'hoster-operator', 'tenant-admin', 'tenant-operator', 'tenant-viewer')),
  password_hash text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((tenant IS NULL) = (role IN ('hoster-admin', 'hoster-operator')))
);
CREATE INDEX portal_users_tenant ON portal_users (tenant);

-- One-time password reset links: only the SHA-256 of the link's secret is kept; a link is used once
-- (used_at) and expires; issuing a new link leaves older ones valid until they expire or one is used
-- (using one voids the user's others).
CREATE TABLE portal_reset_links (
  secret_sha256 text PRIMARY KEY,
  user_id bigint NOT NULL REFERENCES portal_users(id) ON DELETE CASCADE,
  expires_at timestamptz NOT NULL,
  used_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX portal_reset_links_user ON portal_reset_links (user_id);
