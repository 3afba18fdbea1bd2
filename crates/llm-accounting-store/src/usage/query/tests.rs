//! The shapes of the shared statements: the same SQL as when each schema had its own copy,
//! rendered for each backend with its own placeholders and quoting.

use chrono::{DateTime, TimeZone, Utc};
use llm_accounting_usage::{GroupBy, Scope, StatsQuery};
use sea_orm::DbBackend;
use sea_orm::sea_query::SelectStatement;

use super::super::columns::{OWN, OWN_LIMITS, PYTHON, PYTHON_LIMITS};
use super::{lock_select, stats_select, tail_select, usage_select};

fn june() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("a time")
}

fn sql(backend: DbBackend, s: &SelectStatement) -> String {
    sea_orm::StatementBuilder::build(s, &backend).sql
}

#[test]
fn usage_of_a_scope() {
    let t = june();
    let scope = Scope {
        user: Some("alice".into()),
        no_project: true,
        ..Scope::global()
    };
    assert_eq!(
        sql(
            DbBackend::Sqlite,
            &usage_select(DbBackend::Sqlite, &OWN, &scope, t, t)
        ),
        r#"SELECT COUNT(*), CAST(COALESCE(SUM("usage_events"."prompt_tokens"), 0) AS BIGINT), CAST(COALESCE(SUM("usage_events"."completion_tokens"), 0) AS BIGINT), CAST(COALESCE(SUM("usage_events"."cost_micros"), 0) AS BIGINT), MIN("usage_events"."at_us") FROM "usage_events" WHERE "usage_events"."at_us" >= ? AND "usage_events"."at_us" < ? AND "usage_events"."user_id" = ? AND "usage_events"."project" IS NULL"#
    );
    assert_eq!(
        sql(
            DbBackend::Postgres,
            &usage_select(DbBackend::Postgres, &PYTHON, &scope, t, t)
        ),
        r#"SELECT COUNT(*), CAST(COALESCE(SUM((CASE WHEN ("e"."prompt_tokens" > (1000000000000)) THEN 1000000000000 WHEN ("e"."prompt_tokens" < (0)) THEN 0 ELSE "e"."prompt_tokens" END)), 0) AS BIGINT), CAST(COALESCE(SUM((CASE WHEN ("e"."completion_tokens" > (1000000000000)) THEN 1000000000000 WHEN ("e"."completion_tokens" < (0)) THEN 0 ELSE "e"."completion_tokens" END)), 0) AS BIGINT), COALESCE(SUM((CASE WHEN ("e"."cost" > (1000000000.0)) THEN 1000000000.0 WHEN ("e"."cost" < (0)) THEN 0 ELSE "e"."cost" END)), 0.0), MIN("e"."timestamp") FROM "accounting_entries" AS "e" LEFT JOIN "usage_entry_sources" AS "s" ON "s"."entry_id" = "e"."id" WHERE "e"."timestamp" >= $1 AND "e"."timestamp" < $2 AND "e"."username" = $3 AND "e"."project" IS NULL"#
    );
}

#[test]
fn statistics_by_key() {
    let q = StatsQuery {
        since: Some(june()),
        until: None,
        by: GroupBy::Key,
        top: None,
    };
    assert_eq!(
        sql(DbBackend::MySql, &stats_select(DbBackend::MySql, &OWN, &q)),
        "SELECT `usage_events`.`key_identity`, `usage_events`.`key_version`, COUNT(*), CAST(COALESCE(SUM(`usage_events`.`prompt_tokens`), 0) AS SIGNED), CAST(COALESCE(SUM(`usage_events`.`completion_tokens`), 0) AS SIGNED), CAST(COALESCE(SUM(`usage_events`.`cached_tokens`), 0) AS SIGNED), CAST(COALESCE(SUM(`usage_events`.`reasoning_tokens`), 0) AS SIGNED), CAST(COALESCE(SUM(`usage_events`.`cost_micros`), 0) AS SIGNED) FROM `usage_events` WHERE `usage_events`.`at_us` >= ? GROUP BY `usage_events`.`key_identity`, `usage_events`.`key_version`"
    );
    assert_eq!(
        sql(
            DbBackend::Sqlite,
            &stats_select(DbBackend::Sqlite, &PYTHON, &q)
        ),
        r#"SELECT "s"."key_identity", "s"."key_version", COUNT(*), CAST(COALESCE(SUM((CASE WHEN ("e"."prompt_tokens" > (1000000000000)) THEN 1000000000000 WHEN ("e"."prompt_tokens" < (0)) THEN 0 ELSE "e"."prompt_tokens" END)), 0) AS BIGINT), CAST(COALESCE(SUM((CASE WHEN ("e"."completion_tokens" > (1000000000000)) THEN 1000000000000 WHEN ("e"."completion_tokens" < (0)) THEN 0 ELSE "e"."completion_tokens" END)), 0) AS BIGINT), CAST(COALESCE(SUM((CASE WHEN ("e"."cached_tokens" > (1000000000000)) THEN 1000000000000 WHEN ("e"."cached_tokens" < (0)) THEN 0 ELSE "e"."cached_tokens" END)), 0) AS BIGINT), CAST(COALESCE(SUM((CASE WHEN ("e"."reasoning_tokens" > (1000000000000)) THEN 1000000000000 WHEN ("e"."reasoning_tokens" < (0)) THEN 0 ELSE "e"."reasoning_tokens" END)), 0) AS BIGINT), COALESCE(SUM((CASE WHEN ("e"."cost" > (1000000000.0)) THEN 1000000000.0 WHEN ("e"."cost" < (0)) THEN 0 ELSE "e"."cost" END)), 0.0) FROM "accounting_entries" AS "e" LEFT JOIN "usage_entry_sources" AS "s" ON "s"."entry_id" = "e"."id" WHERE "e"."timestamp" >= ? GROUP BY "s"."key_identity", "s"."key_version""#
    );
}

#[test]
fn last_events() {
    assert_eq!(
        sql(
            DbBackend::Postgres,
            &tail_select(DbBackend::Postgres, &PYTHON, 5)
        ),
        r#"SELECT "e"."timestamp", "e"."model", "s"."service", "e"."username", "e"."project", "e"."caller_name", "e"."session", "s"."key_identity", "s"."key_version", CAST("e"."prompt_tokens" AS BIGINT), CAST("e"."completion_tokens" AS BIGINT), CAST("e"."cached_tokens" AS BIGINT), CAST("e"."reasoning_tokens" AS BIGINT), "e"."cost", "e"."execution_time" FROM "accounting_entries" AS "e" LEFT JOIN "usage_entry_sources" AS "s" ON "s"."entry_id" = "e"."id" ORDER BY "e"."timestamp" DESC, "e"."id" DESC LIMIT $1"#
    );
}

#[test]
fn limits_locked_in_id_order() {
    assert_eq!(
        sql(
            DbBackend::Postgres,
            &lock_select(DbBackend::Postgres, &PYTHON_LIMITS, &[1, 2])
        ),
        r#"SELECT CAST("id" AS BIGINT) FROM "usage_limits" WHERE "id" IN ($1, $2) ORDER BY "id" ASC FOR UPDATE"#
    );
    assert_eq!(
        sql(
            DbBackend::MySql,
            &lock_select(DbBackend::MySql, &OWN_LIMITS, &[3])
        ),
        "SELECT `id` FROM `quota_limits` WHERE `id` IN (?) ORDER BY `id` ASC FOR UPDATE"
    );
}
