//! Runs the fuzz seeds (worker/fuzz/seeds, plus any crash reproducers added there) through the parser and the
//! engine on every test run, so a fixed fuzz finding stays fixed. Fuzzing itself: see docs/fuzzing.md.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

use sensorpipe_worker::engine::Outputs;

mod common;

#[test]
fn every_seed_is_read_or_dead_lettered_without_panicking() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
    let pipeline = common::reference();
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let mut engine = pipeline.engine();
        let mut out = Outputs::default();
        engine.process(&bytes, &mut out);
        engine.flush(&mut out);
        let accepted = engine.stats().readings;
        assert_eq!(accepted + out.dead_letters.len() as u64, 1);
        seen += 1;
    }
    assert!(seen >= 10, "seeds found: {seen}");
}
