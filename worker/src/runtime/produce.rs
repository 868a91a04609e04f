//! Writing records to a Kafka topic at a target rate, keyed by sensor id (what devices behind a gateway do):
//! the `simulate --topic` output, used by tests, benchmarks and demos.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

/// Where and how fast to produce.
#[derive(Clone, Debug)]
pub struct ProduceTarget {
    pub bootstrap_servers: String,
    pub topic: String,
    /// Records per second; `None` is as fast as the broker takes them.
    pub rate: Option<f64>,
    pub kafka: BTreeMap<String, String>,
    /// The JSON field whose value keys each record (the pipeline's `fields.sensorId`), so one sensor's readings
    /// stay in one partition, in order.
    pub key_field: String,
}

/// A rate-limited producer of JSON lines.
pub struct TopicWriter {
    producer: BaseProducer,
    topic: String,
    key_field: String,
    rate: Option<f64>,
    started: Instant,
    sent: u64,
}

impl std::fmt::Debug for TopicWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicWriter").field("topic", &self.topic).field("sent", &self.sent).finish()
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum SensorId<'a> {
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
    Number(serde_json::Number),
}

/// The value of `field` in a JSON object line as key bytes: a string's text, or a number as written. Only that
/// field's value is decoded; the others are skipped without allocating.
fn sensor_key(line: &[u8], field: &str) -> Option<Vec<u8>> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let id = serde::de::DeserializeSeed::deserialize(FieldOf(field), &mut de).ok().flatten()?;
    Some(match id {
        SensorId::Text(t) => t.into_owned().into_bytes(),
        SensorId::Number(n) => n.to_string().into_bytes(),
    })
}

/// Reads one object, keeping the value of one field.
struct FieldOf<'f>(&'f str);

impl<'de> serde::de::DeserializeSeed<'de> for FieldOf<'_> {
    type Value = Option<SensorId<'de>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldOf<'_> {
    type Value = Option<SensorId<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.0 {
                found = map.next_value::<Option<SensorId<'de>>>().ok().flatten();
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

impl TopicWriter {
    pub fn new(target: &ProduceTarget) -> Result<Self, KafkaError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &target.bootstrap_servers)
            .set("linger.ms", "10")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.kbytes", "65536");
        for (k, v) in &target.kafka {
            c.set(k, v);
        }
        c.set("enable.idempotence", "true");
        Ok(Self {
            producer: c.create()?,
            topic: target.topic.clone(),
            key_field: target.key_field.clone(),
            rate: target.rate.filter(|r| *r > 0.0),
            started: Instant::now(),
            sent: 0,
        })
    }

    /// Sends one line; waits when ahead of the rate or when the producer queue is full.
    pub fn write(&mut self, line: &[u8]) -> Result<(), KafkaError> {
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.sent as f64 / rate);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        let key = sensor_key(line, &self.key_field);
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(line);
        if let Some(k) = key.as_deref() {
            record = record.key(k);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Waits until everything sent is acknowledged.
    pub fn finish(self, timeout: Duration) -> Result<u64, KafkaError> {
        self.producer.flush(timeout)?;
        Ok(self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_sensor_id_text() {
        assert_eq!(sensor_key(br#"{"sensor_id":"room_101","temperature":1}"#, "sensor_id"), Some(b"room_101".to_vec()));
        assert_eq!(sensor_key(br#"{"temperature":1,"sensor_id":42}"#, "sensor_id"), Some(b"42".to_vec()));
        assert_eq!(sensor_key(br#"{"temperature":1}"#, "sensor_id"), None);
        assert_eq!(sensor_key(b"not json", "sensor_id"), None);
    }

    #[test]
    fn any_field_can_be_the_key() {
        assert_eq!(sensor_key(br#"{"device":"d-7","t":{"a":[1,2]}}"#, "device"), Some(b"d-7".to_vec()));
        assert_eq!(sensor_key(br#"{"device":7}"#, "device"), Some(b"7".to_vec()));
        assert_eq!(sensor_key(br#"{"device":null}"#, "device"), None);
        assert_eq!(sensor_key(br#"{"sensor_id":"x"}"#, "device"), None);
        assert_eq!(sensor_key(br#"{"dev\u0069ce":"escaped"}"#, "device"), Some(b"escaped".to_vec()));
    }
}
