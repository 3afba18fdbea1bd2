//! Group reservation and group commit: the strict reservations (and the commits) that arrive
//! while one group is being written are decided (written) together, in one transaction
//! ([`UsageStore::reserve_many`], [`UsageStore::commit_many`]), so that a busy limit's row is
//! locked, its usage read and the database's log flushed once per group instead of once per
//! call. Each call still returns only with its own answer; requests are decided in the order
//! they arrived.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use llm_accounting_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{QuotaRequest, ReserveOutcome, UsageEvent, UsageStore};

/// Most commits written in one transaction.
const MAX_GROUP: usize = 256;

/// Commits waiting for the writer (each waits for its answer, so this bounds nothing but
/// bursts; senders wait when it is full).
const QUEUE: usize = 4_096;

type Job = (Uuid, UsageEvent, oneshot::Sender<Result<()>>);

/// The handle of the group-commit writer.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the writer of `store` on the current Tokio runtime; it stops when every handle
    /// is dropped.
    pub(crate) fn start(store: Arc<dyn UsageStore>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        tokio::spawn(async move {
            let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
            while let Some(first) = rx.recv().await {
                group.push(first);
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                let (commits, answers): (Vec<(Uuid, UsageEvent)>, Vec<_>) = group
                    .drain(..)
                    .map(|(id, e, answer)| ((id, e), answer))
                    .unzip();
                let result = store.commit_many(&commits).await;
                for answer in answers {
                    let _ = answer.send(result.clone());
                }
            }
        });
        Committer { tx }
    }

    /// Commits `reservation` with `event` (validated by the caller), with whatever else is
    /// committed meanwhile.
    ///
    /// # Errors
    ///
    /// The store's error writing the group (nothing of the group was written); a writer that
    /// stopped.
    pub(crate) async fn commit(&self, reservation: Uuid, event: UsageEvent) -> Result<()> {
        let (answer, result) = oneshot::channel();
        let stopped = || Error::invalid("usage", "the accounting was shut down");
        self.tx
            .send((reservation, event, answer))
            .await
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

type Ask = (QuotaRequest, oneshot::Sender<Result<ReserveOutcome>>);

/// The handle of the group-reservation writer.
#[derive(Debug, Clone)]
pub(crate) struct Reserver {
    tx: mpsc::Sender<Ask>,
}

impl Reserver {
    /// Starts the writer of `store` (reservations held for `ttl`) on the current Tokio
    /// runtime; it stops when every handle is dropped.
    pub(crate) fn start(store: Arc<dyn UsageStore>, ttl: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<Ask>(QUEUE);
        tokio::spawn(async move {
            let mut group: Vec<Ask> = Vec::with_capacity(MAX_GROUP);
            while let Some(first) = rx.recv().await {
                group.push(first);
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(ask) => group.push(ask),
                        Err(_) => break,
                    }
                }
                let (requests, answers): (Vec<QuotaRequest>, Vec<_>) = group.drain(..).unzip();
                match store.reserve_many(&requests, ttl, Utc::now()).await {
                    Ok(outcomes) if outcomes.len() == answers.len() => {
                        for (answer, outcome) in answers.into_iter().zip(outcomes) {
                            let _ = answer.send(Ok(outcome));
                        }
                    }
                    Ok(_) => {
                        for answer in answers {
                            let _ = answer.send(Err(Error::invalid(
                                "reservation",
                                "the store answered a group of reservations short",
                            )));
                        }
                    }
                    Err(e) => {
                        for answer in answers {
                            let _ = answer.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Reserver { tx }
    }

    /// Decides `request` (validated by the caller) with whatever else is asked meanwhile.
    ///
    /// # Errors
    ///
    /// The store's error deciding the group (nothing of it was held); a writer that stopped.
    pub(crate) async fn reserve(&self, request: QuotaRequest) -> Result<ReserveOutcome> {
        let (answer, result) = oneshot::channel();
        let stopped = || Error::invalid("usage", "the accounting was shut down");
        self.tx
            .send((request, answer))
            .await
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}
