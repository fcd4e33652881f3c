-- Accounts. E-mail addresses are stored lower-cased by the service, so the
-- plain unique index is a case-insensitive one; the check keeps it that way.
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL,
    name          text        NOT NULL,
    -- Argon2id PHC string: algorithm, parameters, salt and hash in one.
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT users_email_lower_case CHECK (email = lower(email)),
    CONSTRAINT users_password_hash_phc CHECK (password_hash LIKE '$argon2id$%')
);

CREATE UNIQUE INDEX users_email_key ON users (email);

-- A login session: the chain of refresh tokens that one login started.
-- Every exchange locks its family's row, so exchanges within a family are
-- serialised and a revocation can never miss a token issued concurrently.
CREATE TABLE refresh_token_families (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    -- Set when a spent token was presented again: every token of the family
    -- is refused from then on.
    revoked_at timestamptz
);

CREATE INDEX refresh_token_families_user ON refresh_token_families (user_id);

-- Refresh tokens, by the SHA-256 of the token (the token itself is never
-- stored). A refresh marks the presented token used and adds the family's
-- next one.
CREATE TABLE refresh_tokens (
    id          uuid        PRIMARY KEY,
    family_id   uuid        NOT NULL REFERENCES refresh_token_families (id) ON DELETE CASCADE,
    token_hash  bytea       NOT NULL CHECK (octet_length(token_hash) = 32),
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE UNIQUE INDEX refresh_tokens_token_hash_key ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);
