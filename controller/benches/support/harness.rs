//! The benchmarks' harness: std::time only (no criterion), bounded in runs and time,
//! reporting median, p10 and p90 in ms.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// A case stops early once it has run this long (with at least 3 runs).
const BUDGET: Duration = Duration::from_secs(20);

pub struct Timing {
    pub samples: Vec<f64>,
    pub first: f64,
}

/// Runs `f` up to `runs` times (at least 3, and no more once `BUDGET` is spent), after
/// `warmup` untimed runs; returns the samples in ms, sorted, and the first timed one.
pub fn measure<R>(runs: usize, warmup: usize, mut f: impl FnMut() -> R) -> Timing {
    for _ in 0..warmup {
        black_box(f());
    }
    let start = Instant::now();
    let mut samples = Vec::with_capacity(runs);
    while samples.len() < runs && (samples.len() < 3 || start.elapsed() < BUDGET) {
        let t = Instant::now();
        let out = f();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        drop(black_box(out));
    }
    let first = samples[0];
    samples.sort_by(f64::total_cmp);
    Timing { samples, first }
}

/// The value at quantile `q` of sorted samples (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

pub fn report(name: &str, target: Option<f64>, timing: &Timing) {
    let s = &timing.samples;
    let median = quantile(s, 0.5);
    let target = match target {
        Some(t) => format!("  target {t:>7.2} ms  ({:.2}x of target)", median / t),
        None => String::new(),
    };
    println!(
        "{name:<34} median {median:>8.2} ms  p10 {:>8.2} ms  p90 {:>8.2} ms  first {:>8.2} ms  ({} runs){target}",
        quantile(s, 0.1),
        quantile(s, 0.9),
        timing.first,
        s.len(),
    );
}
