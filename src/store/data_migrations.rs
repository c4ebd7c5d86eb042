//! Data migrations SQL cannot express, run in Rust right after the schema migrations, each once.

use super::{StoreResult, Tx, on_conn};
use crate::domain::ids::GuildId;
use crate::domain::validation::name_key;
use std::collections::HashMap;

/// The schema migration that asks for NFKC name keys (it creates the
/// `data_migrations` table that records them done).
pub(super) const NFKC_NAME_KEYS_VERSION: i64 = 5;
const NFKC_NAME_KEYS: &str = "0005_nfkc_name_keys";

/// Separates a name key from an application id in a key that must not
/// collide. Names cannot hold control characters (validation refuses them),
/// so no real key contains it, whatever a member names an app.
const SEPARATOR: char = '\u{1f}';

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct NameRow {
    pub id: String,
    pub guild_id: i64,
    pub name: String,
    pub name_key: String,
    /// 1 when the row counts for the partial unique index `applications_guild_name`.
    pub holds_name: i64,
}

/// Two live applications of a guild whose names now share a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Collision {
    pub guild_id: i64,
    /// The older one: it keeps the key, and so the name.
    pub kept: (String, String),
    /// The newer one: kept too, under a key of its own.
    pub other: (String, String),
}

/// What to write: (app id, new key) for every row whose key changes, and
/// the collisions found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub updates: Vec<(String, String)>,
    pub collisions: Vec<Collision>,
}

/// New keys for `rows`, given oldest first per guild. A live row whose new
/// key an older live row took keeps existing under `key SEPARATOR id`, unique
/// by its id, so the unique index holds and nothing is lost. Deterministic,
/// and a second run over its own output plans nothing.
pub(crate) fn plan_name_keys(rows: &[NameRow]) -> Plan {
    let mut plan = Plan::default();
    let mut taken: HashMap<(i64, String), (String, String)> = HashMap::new();
    for row in rows {
        let key = name_key(&row.name);
        let wanted = if row.holds_name == 0 {
            key
        } else if let Some(kept) = taken.get(&(row.guild_id, key.clone())) {
            plan.collisions.push(Collision {
                guild_id: row.guild_id,
                kept: kept.clone(),
                other: (row.id.clone(), row.name.clone()),
            });
            format!("{key}{SEPARATOR}{}", row.id)
        } else {
            taken.insert(
                (row.guild_id, key.clone()),
                (row.id.clone(), row.name.clone()),
            );
            key
        };
        if wanted != row.name_key {
            plan.updates.push((row.id.clone(), wanted));
        }
    }
    plan
}

impl<M> Tx<M> {
    /// Claims a data migration for this transaction: false if it was done
    /// already. On PostgreSQL a second process's claim waits for the first's
    /// transaction and then finds the row; on SQLite write transactions are
    /// serial anyway. So the work runs once even when several processes start.
    async fn claim_data_migration(&mut self, id: &str, now_ms: i64) -> StoreResult<bool> {
        let n = on_conn!(self, c => sqlx::query(
            "INSERT INTO data_migrations (id, done_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(now_ms)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    async fn set_name_key(&mut self, app: &str, key: &str) -> StoreResult<()> {
        on_conn!(self, c => sqlx::query("UPDATE applications SET name_key = $1 WHERE id = $2")
            .bind(key)
            .bind(app)
            .execute(&mut *c)
            .await
            .map(drop)?);
        Ok(())
    }

    /// Recomputes every stored name key with today's `name_key`, once.
    /// Returns the collisions found (each also logged), or None when it had
    /// been done before.
    pub(super) async fn nfkc_name_keys(&mut self, now_ms: i64) -> StoreResult<Option<Plan>> {
        if !self.claim_data_migration(NFKC_NAME_KEYS, now_ms).await? {
            return Ok(None);
        }
        // `holds_name` repeats the unique index's predicate (migration 0004).
        let rows: Vec<NameRow> = on_conn!(self, c => sqlx::query_as(
            "SELECT id, guild_id, name, name_key, \
             CAST(CASE WHEN status NOT IN ('denied', 'expired', 'withdrawn', 'revoked') \
             THEN 1 ELSE 0 END AS BIGINT) AS holds_name \
             FROM applications ORDER BY guild_id, created_at, id")
            .fetch_all(&mut *c)
            .await?);
        let plan = plan_name_keys(&rows);
        // The index is checked after each statement: a row may take a key
        // another row still holds until its own update. So every changing
        // row first moves to a placeholder unique by its id, then to its key.
        for (app, _) in &plan.updates {
            self.set_name_key(app, &format!("{SEPARATOR}{app}")).await?;
        }
        for (app, key) in &plan.updates {
            self.set_name_key(app, key).await?;
        }
        for c in &plan.collisions {
            tracing::warn!(
                guild = %GuildId::from_db(c.guild_id),
                kept_app = %c.kept.0,
                kept_name = %c.kept.1,
                app = %c.other.0,
                name = %c.other.1,
                "two live applications' names now compare equal (NFKC, any case); \
                 both are kept, the older one keeps the name"
            );
        }
        if !plan.updates.is_empty() {
            tracing::info!(
                changed = plan.updates.len(),
                "recomputed application name keys"
            );
        }
        Ok(Some(plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, guild: i64, name: &str, old_key: &str, live: bool) -> NameRow {
        NameRow {
            id: id.into(),
            guild_id: guild,
            name: name.into(),
            name_key: old_key.into(),
            holds_name: i64::from(live),
        }
    }

    #[test]
    fn keys_are_recomputed_and_the_older_name_wins() {
        let rows = vec![
            row("app_1", 1, "ＦＲＯＮＴ desk", "ｆｒｏｎｔ desk", true),
            row("app_2", 1, "Front Desk", "front desk", true),
            // Another guild may use the name.
            row("app_3", 2, "Front Desk", "front desk", true),
            // A dead row holds nothing: it gets its key, no collision.
            row("app_4", 1, "ＦＲＯＮＴ DESK", "ｆｒｏｎｔ desk", false),
            row("app_5", 1, "Spa", "spa", true),
        ];
        let plan = plan_name_keys(&rows);
        assert_eq!(
            plan.updates,
            vec![
                ("app_1".to_owned(), "front desk".to_owned()),
                ("app_2".to_owned(), "front desk\u{1f}app_2".to_owned()),
                ("app_4".to_owned(), "front desk".to_owned()),
            ]
        );
        assert_eq!(
            plan.collisions,
            vec![Collision {
                guild_id: 1,
                kept: ("app_1".into(), "ＦＲＯＮＴ desk".into()),
                other: ("app_2".into(), "Front Desk".into()),
            }]
        );
        // Over its own output it changes nothing (it still sees the collision).
        let after: Vec<NameRow> = rows
            .into_iter()
            .map(|mut r| {
                if let Some((_, k)) = plan.updates.iter().find(|(id, _)| *id == r.id) {
                    r.name_key = k.clone();
                }
                r
            })
            .collect();
        let again = plan_name_keys(&after);
        assert!(again.updates.is_empty(), "{again:?}");
        assert_eq!(again.collisions, plan.collisions);
    }
}
