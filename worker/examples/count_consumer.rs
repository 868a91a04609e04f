//! The baseline of the runtime benchmark (scripts/bench-runtime.sh): a consumer that only counts records, with
//! the same librdkafka build and consumer settings as the worker. Prints JSON with its rate from the first to the
//! last record. Not part of the product.
#![allow(clippy::print_stdout, clippy::expect_used)]

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bootstrap, topic, expected) = (&args[1], &args[2], args[3].parse::<u64>().expect("record count"));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("count-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.queue.backoff.ms", "1")
        .set("queued.max.messages.kbytes", "65536")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let (mut n, mut bytes, mut first) = (0u64, 0u64, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            use rdkafka::Message;
            first.get_or_insert_with(Instant::now);
            n += 1;
            bytes += m.payload().map_or(0, <[u8]>::len) as u64;
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!(r#"{{"records":{n},"bytes":{bytes},"seconds":{secs:.3},"records_per_second":{:.0}}}"#, n as f64 / secs);
}
