-- Names are now unique by their NFKC form, lower-cased (`ＦＲＯＮＴ desk` is
-- `Front Desk`). Neither dialect computes NFKC, so keygate recomputes every
-- stored `applications.name_key` in Rust right after the migrations
-- (store/data_migrations.rs), in one transaction that also records it here:
-- it runs once, whichever process gets there first.
CREATE TABLE data_migrations (
    id      TEXT PRIMARY KEY,
    done_at BIGINT NOT NULL
);
