//! Known defects of the test broker, pinned so the workarounds in `tests/common` stay honest.
//!
//! Tansu 0.6.0 with in-memory storage returns no records when a fetch starts inside a record batch:
//! a consumer that resumes from a committed offset in the middle of a batch (after a restart or a
//! rebalance) receives nothing from that partition. Apache Kafka returns the containing batch and the
//! client skips the records before the offset. The integration tests therefore make every producer
//! that talks to Tansu write one-record batches (`batch.num.messages = 1`). partner-sync itself does
//! not depend on batch boundaries. If this test starts failing, Tansu fixed it: remove the workaround.

mod common;

use std::time::Duration;

use common::Broker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

async fn offsets_read_from_5(batch_num_messages: &str) -> Vec<i64> {
    let broker = Broker::start();
    broker.create_topic("t", 1);
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "50")
        .set("batch.num.messages", batch_num_messages)
        .create()
        .unwrap();
    let sends: Vec<_> = (0..10)
        .map(|i| {
            p.send_result(FutureRecord::to("t").key("k").payload(&format!("v{i}")))
                .unwrap()
        })
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "g")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, Offset::Offset(5)).unwrap();
    c.assign(&tpl).unwrap();
    let mut got = vec![];
    for _ in 0..30 {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            got.push(m.offset());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_returns_nothing_for_a_fetch_that_starts_inside_a_batch() {
    assert_eq!(offsets_read_from_5("10000").await, Vec::<i64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_record_batches_every_offset_is_a_batch_start() {
    assert_eq!(offsets_read_from_5("1").await, vec![5, 6, 7, 8, 9]);
}
