-- todoapp's schema at the head revision, as plain PostgreSQL DDL.
-- `psql -f schema.sql` on an empty database gives what `alembic upgrade head` gives
-- (tests/test_schema.py compares the two). Alembic owns the schema: change the
-- migrations first, then this file.

CREATE EXTENSION IF NOT EXISTS pg_trgm;  -- substring search by index (ILIKE)
CREATE EXTENSION IF NOT EXISTS btree_gin;  -- the owner as a GIN index's first column

CREATE TABLE users (
    id            SERIAL,
    email         varchar(200) NOT NULL,
    username      varchar(45)  NOT NULL,
    firstname     varchar(45),
    lastname      varchar(45),
    hash_password varchar(200) NOT NULL,
    is_active     boolean      NOT NULL DEFAULT true,
    role          varchar(45)  NOT NULL DEFAULT 'user',
    token_version integer      NOT NULL DEFAULT 0,
    version       integer      NOT NULL DEFAULT 1,
    is_verified   boolean      NOT NULL DEFAULT false,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT ck_users_role CHECK (role IN ('user', 'admin'))
);

CREATE UNIQUE INDEX uq_users_lower_username ON users (lower(username));
CREATE UNIQUE INDEX uq_users_lower_email ON users (lower(email));
CREATE INDEX ix_users_search ON users USING gin
    (username gin_trgm_ops, email gin_trgm_ops, firstname gin_trgm_ops, lastname gin_trgm_ops);

CREATE TABLE todos (
    id          SERIAL,
    title       varchar(200) NOT NULL,
    description varchar(200) NOT NULL DEFAULT '',
    priority    integer      NOT NULL,
    complete    boolean      NOT NULL DEFAULT false,
    owner_id    integer      NOT NULL,
    created_at  timestamptz  NOT NULL DEFAULT statement_timestamp(),
    updated_at  timestamptz  NOT NULL DEFAULT statement_timestamp(),
    version     integer      NOT NULL DEFAULT 1,
    CONSTRAINT todos_pkey PRIMARY KEY (id),
    CONSTRAINT fk_todos_owner_id_users FOREIGN KEY (owner_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT ck_todos_priority CHECK (priority BETWEEN 1 AND 5)
);

CREATE TABLE sessions (
    id           SERIAL,
    user_id      integer      NOT NULL,
    created_at   timestamptz  NOT NULL DEFAULT statement_timestamp(),
    last_used_at timestamptz  NOT NULL DEFAULT statement_timestamp(),
    user_agent   varchar(255),
    refresh_hash varchar(64)  NOT NULL,
    generation   integer      NOT NULL DEFAULT 0,
    ended_at     timestamptz,
    end_reason   varchar(20),
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT fk_sessions_user_id_users FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT ck_sessions_ended CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);

CREATE INDEX ix_sessions_user_id ON sessions (user_id);
CREATE INDEX ix_sessions_last_used_at ON sessions (last_used_at);
CREATE INDEX ix_sessions_ended_at ON sessions (ended_at);
-- Single-use reset and verification tokens: only their SHA-256 digests.
CREATE TABLE mail_tokens (
    id         SERIAL,
    user_id    integer     NOT NULL,
    purpose    varchar(20) NOT NULL,
    token_hash varchar(64) NOT NULL,
    bound_to   varchar(64) NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz,
    CONSTRAINT mail_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT fk_mail_tokens_user_id_users FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT uq_mail_tokens_token_hash UNIQUE (token_hash),
    CONSTRAINT ck_mail_tokens_purpose CHECK (purpose IN ('password_reset', 'verify_email'))
);

CREATE INDEX ix_mail_tokens_user_id_purpose ON mail_tokens (user_id, purpose);
CREATE INDEX ix_mail_tokens_created_at ON mail_tokens (created_at);

-- Mail waiting for the delivery worker (no message, no token: both are made on delivery).
CREATE TABLE mail_outbox (
    id              SERIAL,
    kind            varchar(20)  NOT NULL,
    recipient       varchar(200) NOT NULL,
    user_id         integer,
    status          varchar(10)  NOT NULL DEFAULT 'queued',
    attempts        integer      NOT NULL DEFAULT 0,
    created_at      timestamptz  NOT NULL,
    next_attempt_at timestamptz  NOT NULL,
    finished_at     timestamptz,
    last_error      varchar(200),
    CONSTRAINT mail_outbox_pkey PRIMARY KEY (id),
    CONSTRAINT fk_mail_outbox_user_id_users FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT ck_mail_outbox_kind CHECK (kind IN ('password_reset', 'verify_email')),
    CONSTRAINT ck_mail_outbox_status CHECK (status IN ('queued', 'sent', 'dropped', 'failed'))
);

CREATE INDEX ix_mail_outbox_due ON mail_outbox (next_attempt_at) WHERE status = 'queued';
CREATE INDEX ix_mail_outbox_finished_at ON mail_outbox (finished_at);
CREATE INDEX ix_mail_outbox_user_id ON mail_outbox (user_id);

-- One index per shape of list query: (key, id) for an ascending sort, (key, -id) for a
-- descending one (key descending, id ascending is (key, -id) read backwards); per owner
-- for GET /todos, over all owners for GET /admin/todos.
CREATE INDEX ix_todos_owner_id_id ON todos (owner_id, id);
CREATE INDEX ix_todos_owner_complete ON todos (owner_id, complete, id);
CREATE INDEX ix_todos_owner_priority ON todos (owner_id, priority, id);
CREATE INDEX ix_todos_owner_priority_desc ON todos (owner_id, priority, (-id));
CREATE INDEX ix_todos_owner_title ON todos (owner_id, lower(title), id);
CREATE INDEX ix_todos_owner_title_desc ON todos (owner_id, lower(title), (-id));
CREATE INDEX ix_todos_owner_created ON todos (owner_id, created_at, id);
CREATE INDEX ix_todos_owner_created_desc ON todos (owner_id, created_at, (-id));
CREATE INDEX ix_todos_priority ON todos (priority, id);
CREATE INDEX ix_todos_priority_desc ON todos (priority, (-id));
CREATE INDEX ix_todos_title ON todos (lower(title), id);
CREATE INDEX ix_todos_title_desc ON todos (lower(title), (-id));
CREATE INDEX ix_todos_created ON todos (created_at, id);
CREATE INDEX ix_todos_created_desc ON todos (created_at, (-id));
CREATE INDEX ix_todos_owner_search ON todos
    USING gin (owner_id, title gin_trgm_ops, description gin_trgm_ops);

-- How many todos each owner has per (complete, priority): a page's total without
-- counting rows. Kept exact by the triggers below, in the statement that writes todos.
CREATE TABLE todo_counts (
    owner_id integer NOT NULL,
    complete boolean NOT NULL,
    priority integer NOT NULL,
    todos    integer NOT NULL,
    CONSTRAINT todo_counts_pkey PRIMARY KEY (owner_id, complete, priority),
    CONSTRAINT fk_todo_counts_owner_id_users FOREIGN KEY (owner_id)
        REFERENCES users (id) ON DELETE CASCADE
);

-- The same counts summed per stripe of owners (owner_id mod 16): every owner's total (for
-- /admin/todos) in at most 160 rows. Kept exact by the same triggers.
CREATE TABLE todo_totals (
    stripe   integer NOT NULL,
    complete boolean NOT NULL,
    priority integer NOT NULL,
    todos    integer NOT NULL,
    CONSTRAINT todo_totals_pkey PRIMARY KEY (stripe, complete, priority)
);

CREATE FUNCTION todo_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One change per (owner, complete, priority), applied in key order. A decrement
    -- only ever meets an existing row; for a deleted owner there is none left to meet.
    -- Then the same changes per stripe of owners (owner_id mod 16) in todo_totals, also
    -- for a deleted owner: their todos leave the totals as they go.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO todo_counts AS c (owner_id, complete, priority, todos)
        SELECT owner_id, complete, priority, count(*) FROM new_rows
        GROUP BY owner_id, complete, priority ORDER BY owner_id, complete, priority
        ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = c.todos + excluded.todos;
        INSERT INTO todo_totals AS t (stripe, complete, priority, todos)
        SELECT mod(owner_id, 16), complete, priority, count(*) FROM new_rows
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (stripe, complete, priority) DO UPDATE SET todos = t.todos + excluded.todos;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO todo_counts AS c (owner_id, complete, priority, todos)
        SELECT d.owner_id, d.complete, d.priority, -count(*) FROM old_rows d
        WHERE EXISTS (SELECT FROM users u WHERE u.id = d.owner_id)
        GROUP BY d.owner_id, d.complete, d.priority ORDER BY 1, 2, 3
        ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = c.todos + excluded.todos;
        INSERT INTO todo_totals AS t (stripe, complete, priority, todos)
        SELECT mod(owner_id, 16), complete, priority, -count(*) FROM old_rows
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (stripe, complete, priority) DO UPDATE SET todos = t.todos + excluded.todos;
    ELSE
        INSERT INTO todo_counts AS c (owner_id, complete, priority, todos)
        SELECT owner_id, complete, priority, sum(change) FROM (
            SELECT owner_id, complete, priority, 1 AS change FROM new_rows
            UNION ALL
            SELECT owner_id, complete, priority, -1 FROM old_rows
        ) AS changes
        GROUP BY owner_id, complete, priority HAVING sum(change) <> 0
        ORDER BY owner_id, complete, priority
        ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = c.todos + excluded.todos;
        INSERT INTO todo_totals AS t (stripe, complete, priority, todos)
        SELECT mod(owner_id, 16), complete, priority, sum(change) FROM (
            SELECT owner_id, complete, priority, 1 AS change FROM new_rows
            UNION ALL
            SELECT owner_id, complete, priority, -1 FROM old_rows
        ) AS changes
        GROUP BY 1, 2, 3 HAVING sum(change) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (stripe, complete, priority) DO UPDATE SET todos = t.todos + excluded.todos;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION todo_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TRUNCATE todos fires no DELETE trigger: every count goes with the todos.
    DELETE FROM todo_counts;
    DELETE FROM todo_totals;
    RETURN NULL;
END
$$;

CREATE TRIGGER todo_counts_insert AFTER INSERT ON todos
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_follow();
CREATE TRIGGER todo_counts_update AFTER UPDATE ON todos
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_follow();
CREATE TRIGGER todo_counts_delete AFTER DELETE ON todos
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_follow();
CREATE TRIGGER todo_counts_truncate AFTER TRUNCATE ON todos
    FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_truncated();

-- How many users there are per stripe of users (id mod 16), role and is_active: every
-- user's total (for /admin/users) in at most 64 rows. Kept exact by the triggers below.
CREATE TABLE user_totals (
    stripe    integer NOT NULL,
    role      varchar(45) NOT NULL,
    is_active boolean NOT NULL,
    users     integer NOT NULL,
    CONSTRAINT user_totals_pkey PRIMARY KEY (stripe, role, is_active)
);

CREATE FUNCTION user_totals_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- Whether the user joins its new (stripe, role, is_active) before it leaves its old
    -- one: the row with the lower key first, as every writer takes them, so that two
    -- users moving between the same two rows in opposite directions never wait for each
    -- other in a circle. A decrement only ever meets an existing row.
    join_first boolean := TG_OP = 'INSERT';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF ROW(mod(NEW.id, 16), NEW.role, NEW.is_active)
                = ROW(mod(OLD.id, 16), OLD.role, OLD.is_active) THEN
            RETURN NULL;  -- a new id in the same stripe: the same row
        END IF;
        join_first := ROW(mod(NEW.id, 16), NEW.role, NEW.is_active)
            < ROW(mod(OLD.id, 16), OLD.role, OLD.is_active);
    END IF;
    IF join_first THEN
        INSERT INTO user_totals AS t (stripe, role, is_active, users)
        VALUES (mod(NEW.id, 16), NEW.role, NEW.is_active, 1)
        ON CONFLICT (stripe, role, is_active) DO UPDATE SET users = t.users + 1;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        UPDATE user_totals SET users = users - 1
        WHERE stripe = mod(OLD.id, 16) AND role = OLD.role AND is_active = OLD.is_active;
    END IF;
    IF TG_OP = 'UPDATE' AND NOT join_first THEN
        INSERT INTO user_totals AS t (stripe, role, is_active, users)
        VALUES (mod(NEW.id, 16), NEW.role, NEW.is_active, 1)
        ON CONFLICT (stripe, role, is_active) DO UPDATE SET users = t.users + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION user_totals_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TRUNCATE users fires no DELETE trigger: every total goes with the users.
    DELETE FROM user_totals;
    RETURN NULL;
END
$$;

-- Row by row (users are written one at a time); an UPDATE that changes neither role
-- nor is_active (a login, a password change) does not fire it.
CREATE TRIGGER user_totals_insert AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION user_totals_follow();
CREATE TRIGGER user_totals_update AFTER UPDATE OF id, role, is_active ON users
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.role IS DISTINCT FROM NEW.role
        OR OLD.is_active IS DISTINCT FROM NEW.is_active)
    EXECUTE FUNCTION user_totals_follow();
CREATE TRIGGER user_totals_delete AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION user_totals_follow();
CREATE TRIGGER user_totals_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION user_totals_truncated();
