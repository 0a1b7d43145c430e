//! A producer whose delivery reports are served by a thread that sleeps while there are none.
//!
//! Why: rust-rdkafka's `ThreadedProducer` (and `FutureProducer`, built on it) serves its events in
//! a loop of 100 ms polls, and each poll hands librdkafka the time left in whole milliseconds: the
//! last fraction of a millisecond of every poll becomes a run of 0 ms polls, a busy loop of clock
//! reads (`rdkafka` 0.39, `BaseProducer::poll`). Idle, each such thread took ~0.85% of a core
//! (17–18 ticks of 10 ms in 20 s under `partner-sync demo --hold`), and the connector has two.
//!
//! Here librdkafka writes a byte to a pipe whenever the producer's event queue goes from empty to
//! non-empty (`rd_kafka_queue_io_event_enable`); the thread sleeps in `poll(2)` on the pipe and
//! serves the queue with polls of no wait while it holds events. Should the queue not shrink under
//! those polls (events arriving as fast as they are served), the thread serves it with a 100 ms
//! poll as before, so the worst case is the old behaviour.

use std::ops::Deref;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::ClientConfig;

/// How long the thread sleeps on the pipe before it looks again by itself. Unit tests make it a
/// minute, so that a record delivered in time was woken for by the pipe, not found by the timer.
const IDLE_WAKE_MS: i32 = if cfg!(test) { 60_000 } else { 1_000 };

/// A `BaseProducer` served by a thread of its own (see the module docs). Derefs to the producer.
pub struct QuietProducer<C: ProducerContext + 'static> {
    producer: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
    /// The pipe's write end: librdkafka writes to it, and so does `drop` to wake the thread.
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl<C: ProducerContext + 'static> QuietProducer<C> {
    /// Creates the producer and starts its thread (named `name`).
    pub fn create(config: &ClientConfig, context: C, name: &str) -> Result<Self, String> {
        let producer = Arc::new(
            BaseProducer::from_config_and_context(config, context).map_err(|e| e.to_string())?,
        );
        let (read, wake) = pipe().map_err(|e| format!("cannot make the producer's pipe: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (producer, stop, write) = (producer.clone(), stop.clone(), wake.as_raw_fd());
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || serve(&producer, &stop, &read, write))
                .map_err(|e| format!("cannot start the producer's thread: {e}"))?
        };
        Ok(QuietProducer {
            producer,
            stop,
            wake,
            thread: Some(thread),
        })
    }
}

impl<C: ProducerContext + 'static> Deref for QuietProducer<C> {
    type Target = BaseProducer<C>;
    fn deref(&self) -> &BaseProducer<C> {
        &self.producer
    }
}

impl<C: ProducerContext + 'static> Drop for QuietProducer<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // SAFETY: a one-byte write to a pipe this struct owns.
        unsafe { libc::write(self.wake.as_raw_fd(), b"s".as_ptr().cast(), 1) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The producer itself (its last `Arc`) flushes what is left when it drops, serving its
        // queue as it does.
    }
}

/// The thread's loop: serve the queue while it holds events, sleep on the pipe otherwise.
fn serve<C: ProducerContext>(
    producer: &BaseProducer<C>,
    stop: &AtomicBool,
    read: &OwnedFd,
    write: i32,
) {
    // SAFETY: the client outlives this thread (the thread holds an `Arc` of the producer); the
    // queue reference taken here is given back below, after librdkafka is told to stop writing.
    let queue = unsafe { rdsys::rd_kafka_queue_get_main(producer.client().native_ptr()) };
    unsafe { rdsys::rd_kafka_queue_io_event_enable(queue, write, b"e".as_ptr().cast(), 1) };
    let mut drained = [0u8; 64];
    while !stop.load(Ordering::Acquire) {
        if !serve_queued(producer, queue) {
            producer.poll(Duration::from_millis(100));
            continue;
        }
        let mut fd = libc::pollfd {
            fd: read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the pipe is non-blocking, so the reads stop when it is empty.
        unsafe {
            libc::poll(&mut fd, 1, IDLE_WAKE_MS);
            while libc::read(read.as_raw_fd(), drained.as_mut_ptr().cast(), drained.len()) > 0 {}
        }
    }
    unsafe {
        rdsys::rd_kafka_queue_io_event_enable(queue, -1, std::ptr::null(), 0);
        rdsys::rd_kafka_queue_destroy(queue);
    }
}

/// Serves `queue` with polls of no wait until it is empty (true), or until a poll leaves it no
/// shorter (false: events arrive as fast as they are served).
fn serve_queued<C: ProducerContext>(
    producer: &BaseProducer<C>,
    queue: *mut rdsys::rd_kafka_queue_t,
) -> bool {
    // SAFETY: `serve` holds the queue reference until after its last call here.
    let length = || unsafe { rdsys::rd_kafka_queue_length(queue) };
    loop {
        let before = length();
        if before == 0 {
            return true;
        }
        producer.poll(Duration::ZERO);
        if length() >= before {
            return false;
        }
    }
}

/// A non-blocking pipe: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The delivery of one record sent through [`send_awaiting`].
pub type Delivered = Result<(i32, i64), String>;

/// A context whose deliveries complete the futures [`send_awaiting`] returns: what the fence
/// producer needs of `FutureProducer`.
#[derive(Default)]
pub struct AwaitingCtx;

impl rdkafka::ClientContext for AwaitingCtx {}

impl ProducerContext for AwaitingCtx {
    type DeliveryOpaque = Box<tokio::sync::oneshot::Sender<Delivered>>;
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, done: Self::DeliveryOpaque) {
        use rdkafka::Message;
        let delivered = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        let _ = done.send(delivered);
    }
}

/// Sends a record to `topic`'s `partition` and returns what resolves with its delivery; a record
/// the producer refuses at once is an error here.
pub fn send_awaiting(
    producer: &QuietProducer<AwaitingCtx>,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &str,
) -> Result<tokio::sync::oneshot::Receiver<Delivered>, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let record = rdkafka::producer::BaseRecord::with_opaque_to(topic, Box::new(tx))
        .partition(partition)
        .key(key)
        .payload(payload);
    producer.send(record).map_err(|(e, _)| e.to_string())?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    /// Deliveries arrive with nobody but the producer's own thread polling, in order per
    /// partition, woken by the pipe (its own timer is a minute in tests: each wait here is 10 s),
    /// and dropping the producer stops its thread.
    #[tokio::test]
    async fn records_are_delivered_by_the_sleeping_thread_and_drop_stops_it() {
        let cluster = MockCluster::new(1).expect("a mock cluster");
        cluster.create_topic("quiet", 2, 1).expect("a topic");
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "5");
        let producer = QuietProducer::create(&config, AwaitingCtx, "quiet test").unwrap();
        let mut waiting = Vec::new();
        for n in 0..200 {
            let partition = n % 2;
            let rx = send_awaiting(&producer, "quiet", partition, "k", &n.to_string()).unwrap();
            waiting.push((partition, rx));
        }
        let mut last = [-1i64; 2];
        for (partition, rx) in waiting {
            let delivered = tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .expect("delivered within 10 s")
                .expect("the sender is not dropped");
            let (p, offset) = delivered.expect("no delivery error");
            assert_eq!(p, partition);
            assert!(offset > last[p as usize], "in order per partition");
            last[p as usize] = offset;
        }
        assert_eq!(last, [99, 99]);
        // Idle for a while, then a record still gets through (the pipe wakes the thread).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rx = send_awaiting(&producer, "quiet", 0, "k", "late").unwrap();
        let late = tokio::time::timeout(Duration::from_secs(10), rx).await;
        assert_eq!(late.unwrap().unwrap(), Ok((0, 100)));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(producer);
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "dropping the producer returns"
        );
    }
}
