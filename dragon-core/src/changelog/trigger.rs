//! Changes made outside the ORM (raw SQL, `update_many`, other services, migrations), logged
//! by a PostgreSQL trigger on the model's table.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityName};

use crate::model::Publish;

/// The trigger function: logs a row's published fields (its trigger arguments after the
/// route) as the ORM would, in the writing transaction; skips ORM writes, which log
/// themselves with the model's own serialization, and updates of unpublished columns only.
const FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION dragon_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  old_j jsonb;
  new_j jsonb;
BEGIN
  IF current_setting('dragon.orm', true) = 'on' THEN
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    SELECT jsonb_object_agg(key, value) INTO old_j
      FROM jsonb_each(to_jsonb(OLD)) WHERE key = ANY(TG_ARGV[1:]);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    SELECT jsonb_object_agg(key, value) INTO new_j
      FROM jsonb_each(to_jsonb(NEW)) WHERE key = ANY(TG_ARGV[1:]);
  END IF;
  IF TG_OP = 'UPDATE' AND old_j = new_j THEN
    RETURN NULL;
  END IF;
  INSERT INTO dragon_changes (route, kind, old, new, at_ms) VALUES (
    TG_ARGV[0],
    CASE TG_OP WHEN 'INSERT' THEN 'created' WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END,
    old_j::text, new_j::text,
    (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
  PERFORM pg_notify('dragon_changes', '');
  RETURN NULL;
END
$$"#;

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Installs (or refreshes) a trigger on `M`'s table that records every insert, update and
/// delete made without the ORM (raw SQL, `update_many`, other services) in the change log,
/// so they reach subscribers like any other change. PostgreSQL only; run it from a migration
/// (or at start-up) before the nodes serve. Values are in PostgreSQL's JSON form of each
/// column (`to_jsonb`), which for timestamps differs in spelling from the model's own.
///
/// Writes through the ORM inside a transaction (every model router write) are still logged
/// by the model itself; on a plain connection the trigger logs them.
pub async fn install_trigger<M: Publish>(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Err(DbErr::Custom(
            "dragon: change-log triggers need PostgreSQL; on SQLite publish bulk writes with \
             dragon_core::model::publish_created/updated/deleted"
                .into(),
        ));
    }
    let table = M::Entity::default().table_name().to_owned();
    let mut args = vec![quote_literal(M::ROUTE)];
    args.extend(M::FIELDS.iter().map(|f| quote_literal(f)));
    db.execute_unprepared(FUNCTION).await?;
    let name = quote_ident(&format!("dragon_changes_{table}"));
    let on = quote_ident(&table);
    db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {name} ON {on}"))
        .await?;
    db.execute_unprepared(&format!(
        "CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {on} FOR EACH ROW \
         EXECUTE FUNCTION dragon_log_change({})",
        args.join(", ")
    ))
    .await?;
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO dragon_triggers (route, table_name) VALUES ($1, $2) \
         ON CONFLICT (route) DO UPDATE SET table_name = excluded.table_name",
        [M::ROUTE.into(), table.into()],
    ))
    .await?;
    super::TRIGGERED
        .write()
        .expect("triggered lock")
        .insert(M::ROUTE.to_owned());
    Ok(())
}
