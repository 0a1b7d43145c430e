//! Exactly-once: the pipeline's records, state writes and input offsets commit together in Kafka
//! transactions (`delivery.guarantee = "exactly_once"`).
//!
//! Kept apart from the at-least-once flow in [`super`], which tracks acknowledgements instead: here a
//! failed delivery or a revoke aborts the open transaction, forgets in-memory state (it holds the
//! aborted effects) and rejoins the group so every partition restarts from its committed offset.

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::producer::Producer;
use rdkafka::TopicPartitionList;

use super::{Pipeline, RuntimeError};
use crate::runtime::kafka;

/// The open Kafka transaction of the exactly-once mode.
#[derive(Default)]
pub(super) struct Txn {
    pub(super) open: bool,
    /// Why the open transaction must be aborted (a failed delivery), if it must.
    pub(super) failed: Option<String>,
    /// Next offset to consume per input partition, committed with the transaction.
    pub(super) offsets: std::collections::BTreeMap<(String, i32), i64>,
}

impl Pipeline {
    /// Switches to exactly-once: outputs, state and input offsets commit together in transactions.
    pub fn transactional(mut self) -> Pipeline {
        self.txn = Some(Txn::default());
        self
    }

    /// A record could not be queued, for a reason that is not the record's own (those become
    /// delivery failures, see [`Pipeline::send_out`]). Exactly-once: the transaction is unusable;
    /// abort it and process its records again. At-least-once: by its class
    /// ([`crate::runtime::client_error`]), start again from the committed offsets, or stop.
    pub(super) fn send_error(&self, e: kafka::Refused) -> RuntimeError {
        if self.txn.is_some() {
            return RuntimeError::Abort(e.message);
        }
        RuntimeError::from_client(e.code, e.message)
    }

    /// Handles the result of one step: an abort request in exactly-once mode aborts and rejoins.
    pub(super) fn settle(&mut self, result: Result<(), RuntimeError>) -> Result<(), RuntimeError> {
        match result {
            Err(RuntimeError::Abort(reason)) if self.txn.is_some() => self.abort_txn(&reason),
            other => other,
        }
    }

    /// Opens a transaction if none is open (exactly-once only).
    pub(super) fn ensure_txn(&mut self) -> Result<(), RuntimeError> {
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        if !txn.open {
            tokio::task::block_in_place(|| self.producer.begin_transaction())
                .map_err(|e| RuntimeError::Kafka(format!("cannot begin a transaction: {e}")))?;
            txn.open = true;
        }
        Ok(())
    }

    /// Commits the open transaction with the input offsets; aborts and rewinds on abortable errors;
    /// stops on fatal ones (a restart re-initialises the producer, fencing this one).
    pub(super) fn commit_txn(&mut self) -> Result<(), RuntimeError> {
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        if !txn.open {
            return Ok(());
        }
        if let Some(reason) = txn.failed.take() {
            return self.abort_txn(&reason);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &txn.offsets {
            tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
                .map_err(|e| RuntimeError::Kafka(e.to_string()))?;
        }
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or_else(|| RuntimeError::Kafka("the consumer has no group metadata".into()))?;
        let timeout = Duration::from_secs(30);
        let result = tokio::task::block_in_place(|| {
            if tpl.count() > 0 {
                self.producer
                    .send_offsets_to_transaction(&tpl, &metadata, timeout)?;
            }
            self.producer.commit_transaction(timeout)
        });
        match result {
            Ok(()) => {
                let txn = self.txn.as_mut().expect("exactly-once");
                txn.open = false;
                txn.offsets.clear();
                self.stats.committed(true);
                Ok(())
            }
            Err(rdkafka::error::KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                self.abort_txn(&e.to_string())
            }
            Err(rdkafka::error::KafkaError::Transaction(e))
                if e.is_retriable() && !e.is_fatal() =>
            {
                tracing::warn!(error = %e, "Committing the transaction failed with a retriable error; retrying at the next interval.");
                Ok(())
            }
            Err(e) => {
                self.stats.committed(false);
                Err(RuntimeError::Kafka(format!("fatal transaction error: {e}. Restarting re-initialises the producer and fences this instance.")))
            }
        }
    }

    /// Aborts the open transaction, forgets in-memory state (it holds the aborted effects) and rejoins
    /// the group so every partition restarts from its committed offset.
    fn abort_txn(&mut self, reason: &str) -> Result<(), RuntimeError> {
        tracing::warn!(
            reason,
            "Aborting the transaction; its records will be processed again."
        );
        self.stats.committed(false);
        tokio::task::block_in_place(|| self.producer.abort_transaction(Duration::from_secs(30)))
            .map_err(|e| RuntimeError::Kafka(format!("cannot abort the transaction: {e}")))?;
        if let Some(txn) = self.txn.as_mut() {
            txn.open = false;
            txn.offsets.clear();
        }
        self.drop_states(None);
        // What waits in the order window comes again after the rejoin.
        self.intake.clear();
        // Rejoin the group, so every partition restarts from its committed offset. (Seeking instead
        // fails for partitions whose fetch has not started, which would silently skip the aborted
        // records.)
        let subscriptions: Vec<String> = self
            .topics
            .subscriptions()
            .into_iter()
            .map(str::to_string)
            .collect();
        let names: Vec<&str> = subscriptions.iter().map(String::as_str).collect();
        self.consumer.unsubscribe();
        self.consumer
            .subscribe(&names)
            .map_err(|e| RuntimeError::Kafka(format!("cannot resubscribe after an abort: {e}")))?;
        self.trackers.clear();
        self.in_flight = 0;
        Ok(())
    }
}
