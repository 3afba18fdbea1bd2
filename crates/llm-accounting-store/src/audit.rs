//! [`AuditLog`] over sea-orm: the `api_key_audit` table, appended in order under a write
//! transaction; a writer that loses the race for the next sequence number retries. A large
//! append is split into INSERTs that stay under the database's limits ([`crate::limits`]),
//! all in the one transaction.

use std::time::Duration;

use async_trait::async_trait;
use std::collections::HashMap;

use llm_accounting_core::audit::{
    AuditChain, AuditEvent, AuditFilter, AuditLog, AuditRecord, GENESIS_HASH, RecordRevision,
};
use llm_accounting_core::{Error, Journal, KeyIdentity, Result};
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, Iterable,
    QueryFilter, QueryOrder,
};
use sea_orm::{FromQueryResult, QuerySelect};
use uuid::Uuid;

use crate::SeaOrmKeyRepository;
use crate::entity::api_key_audit;
use crate::error::{from_db, is_unique_violation};
use crate::limits::rows_per_insert;

const ATTEMPTS: u32 = 30;

fn active(r: &AuditRecord) -> Result<api_key_audit::ActiveModel> {
    let e = &r.event;
    let id = e.identity.as_ref();
    Ok(api_key_audit::ActiveModel {
        seq: Set(i64::try_from(r.seq).map_err(|_| Error::invalid("audit", "sequence overflow"))?),
        at: Set(e.at),
        operation: Set(e.operation.clone()),
        service: Set(id.map(|i| i.service().to_owned())),
        user_id: Set(id.and_then(|i| i.user().map(str::to_owned))),
        project: Set(id.and_then(|i| i.project().map(str::to_owned))),
        principal: Set(e.principal.clone()),
        outcome: Set(e.outcome.clone()),
        provider: Set(e.provider.clone()),
        master_key_ref: Set(e.master_key_ref.clone()),
        detail: Set(e.detail.clone()),
        event_count: Set(
            i64::try_from(e.count).map_err(|_| Error::invalid("audit", "event count overflow"))?
        ),
        first_at: Set(e.first_at),
        record_id: Set(e.record.map(|rr| rr.id.to_string())),
        revision: Set(e
            .record
            .map(|rr| i64::try_from(rr.revision))
            .transpose()
            .map_err(|_| Error::invalid("audit", "revision overflow"))?),
        prev_hash: Set(r.prev_hash.clone()),
        hash: Set(r.hash.clone()),
    })
}

/// A stored row as a record. A row whose identity or record does not parse keeps none, and a
/// negative count reads as 0: the chain check then reports the row as changed.
fn record(m: api_key_audit::Model) -> AuditRecord {
    let named = match (m.record_id.as_deref(), m.revision) {
        (Some(id), Some(revision)) => Uuid::parse_str(id)
            .ok()
            .zip(u64::try_from(revision).ok())
            .map(|(id, revision)| RecordRevision { id, revision }),
        _ => None,
    };
    let identity = m
        .service
        .as_deref()
        .and_then(|s| KeyIdentity::from_parts(s, m.user_id.as_deref(), m.project.as_deref()).ok());
    AuditRecord {
        seq: u64::try_from(m.seq).unwrap_or(0),
        event: AuditEvent {
            at: m.at,
            operation: m.operation,
            identity,
            principal: m.principal,
            outcome: m.outcome,
            provider: m.provider,
            master_key_ref: m.master_key_ref,
            detail: m.detail,
            count: u64::try_from(m.event_count).unwrap_or(0),
            first_at: m.first_at,
            record: named,
        },
        prev_hash: m.prev_hash,
        hash: m.hash,
    }
}

/// Appends a key change's audit row inside the change's transaction `txn`, so that both
/// commit or neither does. [`Error::Conflict`] when another writer took the row's place first
/// (the change is then rolled back, and tried again by the manager).
pub(crate) async fn journal_in(txn: &DatabaseTransaction, journal: &Journal) -> Result<()> {
    journal_many_in(txn, std::slice::from_ref(journal)).await
}

/// Appends the audit rows of a batch of key changes inside its transaction `txn`, linked in
/// order, in INSERTs under the database's limits; [`Error::Conflict`] as [`journal_in`].
pub(crate) async fn journal_many_in(txn: &DatabaseTransaction, journals: &[Journal]) -> Result<()> {
    if journals.is_empty() {
        return Ok(());
    }
    let last = api_key_audit::Entity::find()
        .order_by_desc(api_key_audit::Column::Seq)
        .one(txn)
        .await
        .map_err(|e| from_db("append the audit row", e))?;
    let (mut seq, mut hash) = last.map_or((0, GENESIS_HASH.to_owned()), |m| {
        (u64::try_from(m.seq).unwrap_or(0), m.hash)
    });
    let chunk = rows_per_insert(
        txn.get_database_backend(),
        api_key_audit::Column::iter().count(),
    );
    for journals in journals.chunks(chunk) {
        let mut rows = Vec::with_capacity(journals.len());
        for journal in journals {
            let record = journal.chain.link(seq, &hash, journal.event.clone());
            seq = record.seq;
            hash.clone_from(&record.hash);
            rows.push(active(&record)?);
        }
        api_key_audit::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Conflict {
                        identity: "the audit trail (another writer took the next row)".to_owned(),
                    }
                } else {
                    from_db("append the audit row", e)
                }
            })?;
    }
    Ok(())
}

#[async_trait]
impl AuditLog for SeaOrmKeyRepository {
    async fn append(&self, events: &[AuditEvent], chain: &AuditChain) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let chunk = rows_per_insert(
            self.connection().get_database_backend(),
            api_key_audit::Column::iter().count(),
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let txn = self.begin_write("append audit rows").await?;
            let last = api_key_audit::Entity::find()
                .order_by_desc(api_key_audit::Column::Seq)
                .one(&txn)
                .await
                .map_err(|e| from_db("append audit rows", e))?;
            let (mut seq, mut hash) = last.map_or((0, GENESIS_HASH.to_owned()), |m| {
                (u64::try_from(m.seq).unwrap_or(0), m.hash)
            });
            let mut inserted = Ok(());
            for events in events.chunks(chunk) {
                let mut rows = Vec::with_capacity(events.len());
                for e in events {
                    let r = chain.link(seq, &hash, e.clone());
                    seq = r.seq;
                    hash.clone_from(&r.hash);
                    rows.push(active(&r)?);
                }
                inserted = api_key_audit::Entity::insert_many(rows)
                    .exec_without_returning(&txn)
                    .await
                    .map(drop);
                if inserted.is_err() {
                    break;
                }
            }
            match inserted {
                Ok(()) => {
                    return txn
                        .commit()
                        .await
                        .map_err(|e| from_db("append audit rows", e));
                }
                Err(e) if is_unique_violation(&e) => {
                    drop(txn);
                    if attempt >= ATTEMPTS {
                        // Other writers kept taking the next position: busy, not broken.
                        return Err(Error::DatabaseUnavailable {
                            operation: "append audit rows (other writers kept taking the next \
                                        position)",
                            source: Some(std::sync::Arc::new(e)),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 3)).await;
                }
                Err(e) => return Err(from_db("append audit rows", e)),
            }
        }
    }

    async fn latest_revisions(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, u64>> {
        #[derive(FromQueryResult)]
        struct Latest {
            record_id: String,
            revision: Option<i64>,
        }
        let mut out = HashMap::new();
        // Well under every database's limit of bound parameters.
        for ids in ids.chunks(500) {
            let names: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            let rows = api_key_audit::Entity::find()
                .select_only()
                .column(api_key_audit::Column::RecordId)
                .column_as(
                    Expr::from(Func::max(Expr::col(api_key_audit::Column::Revision))),
                    "revision",
                )
                .filter(api_key_audit::Column::RecordId.is_in(names))
                .filter(api_key_audit::Column::Outcome.eq("ok"))
                .group_by(api_key_audit::Column::RecordId)
                .into_model::<Latest>()
                .all(self.connection())
                .await
                .map_err(|e| from_db("read the audit trail's latest revisions", e))?;
            for row in rows {
                if let (Ok(id), Some(revision)) = (Uuid::parse_str(&row.record_id), row.revision) {
                    out.insert(id, u64::try_from(revision).unwrap_or(u64::MAX));
                }
            }
        }
        Ok(out)
    }

    async fn record_at(&self, seq: u64) -> Result<Option<AuditRecord>> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        api_key_audit::Entity::find_by_id(seq)
            .one(self.connection())
            .await
            .map(|m| m.map(record))
            .map_err(|e| from_db("read an audit row", e))
    }

    async fn last(&self) -> Result<Option<AuditRecord>> {
        api_key_audit::Entity::find()
            .order_by_desc(api_key_audit::Column::Seq)
            .one(self.connection())
            .await
            .map(|m| m.map(record))
            .map_err(|e| from_db("read the last audit row", e))
    }

    async fn records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let mut query = api_key_audit::Entity::find();
        if let Some(s) = &filter.service {
            query = query.filter(api_key_audit::Column::Service.eq(s.as_str()));
        }
        if let Some(u) = &filter.user {
            query = query.filter(api_key_audit::Column::UserId.eq(u.as_str()));
        }
        if let Some(o) = &filter.operation {
            query = query.filter(api_key_audit::Column::Operation.eq(o.as_str()));
        }
        if let Some(t) = filter.since {
            query = query.filter(api_key_audit::Column::At.gte(t));
        }
        let rows = query
            .order_by_asc(api_key_audit::Column::Seq)
            .all(self.connection())
            .await
            .map_err(|e| from_db("read audit rows", e))?;
        // Exact comparisons, whatever the collation.
        Ok(rows
            .into_iter()
            .map(record)
            .filter(|r| filter.matches(r))
            .collect())
    }
}
