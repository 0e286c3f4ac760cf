//! The stable engine: every target's checked-in corpus replayed, a short seeded run of each in
//! every `cargo test`, and the long run (`KEEL_FUZZ_ITERS`, ignored by default; RESILIENCE.md).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::generate::{for_target, input};
use super::{Target, TARGETS};

/// Longest one input may take, even in a debug build on a loaded machine: past it, it counts
/// as a hang.
const SLOW: Duration = Duration::from_secs(2);

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target)
}

/// The seeds of a target, by file name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut seeds: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).expect("a corpus file"))
        })
        .collect();
    seeds.sort();
    seeds
}

/// Runs `target` on `data`: how long it took and whether the parser accepted it, or `Err` with
/// the panic's message when it panicked or was too slow. Time is wall time, and a process under
/// `nice` on a busy machine can be left unscheduled for seconds, so a slow input is run again:
/// it is a hang only if it is slow every time (a parser's time is the same on the same input).
fn check(target: &Target, data: &[u8]) -> Result<(Duration, bool), String> {
    let (mut took, accepted) = check_once(target, data)?;
    for _ in 0..3 {
        if took <= SLOW {
            break;
        }
        took = took.min(check_once(target, data)?.0);
    }
    if took > SLOW {
        return Err(format!("took {took:?} at best of 4 runs (a hang past {SLOW:?})"));
    }
    Ok((took, accepted))
}

fn check_once(target: &Target, data: &[u8]) -> Result<(Duration, bool), String> {
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(data)));
    let took = started.elapsed();
    let accepted = match outcome {
        Ok(accepted) => accepted,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            return Err(format!("panicked: {message}"));
        }
    };
    Ok((took, accepted))
}

/// What a run of one target came to.
#[derive(Debug)]
struct Run {
    inputs: u64,
    /// Inputs the parser accepted: a generator that reaches past the first check.
    accepted: u64,
    took: Duration,
    slowest: Duration,
}

/// `iterations` generated inputs for `target` from `seed`; a failing input is written under
/// `target/fuzz-crashes/` and named in the panic, with the seed and iteration that made it.
fn run(target: &Target, iterations: u64, seed: u64) -> Run {
    let seeds: Vec<Vec<u8>> = corpus(target.name).into_iter().map(|(_, data)| data).collect();
    let generate = for_target(target.name);
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let (mut slowest, mut accepted) = (Duration::ZERO, 0);
    for iteration in 0..iterations {
        let data = input(&mut rng, generate, &seeds);
        match check(target, &data) {
            Ok((took, ok)) => {
                slowest = slowest.max(took);
                accepted += u64::from(ok);
            }
            Err(why) => {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-crashes");
                let file = dir.join(format!("{}-{seed}-{iteration}", target.name));
                let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, &data));
                panic!(
                    "{}: input {iteration} of seed {seed} {why}\ninput: {:?}\nsaved: {} ({saved:?})",
                    target.name,
                    String::from_utf8_lossy(&data),
                    file.display()
                );
            }
        }
    }
    Run { inputs: iterations, accepted, took: started.elapsed(), slowest }
}

#[test]
fn every_target_has_a_corpus_and_a_generator() {
    for target in &TARGETS {
        assert!(!corpus(target.name).is_empty(), "{}: empty corpus", target.name);
        let mut rng = fastrand::Rng::with_seed(1);
        let _ = for_target(target.name)(&mut rng);
    }
}

#[test]
fn the_corpus_replays_without_a_failure() {
    let mut failures = Vec::new();
    for target in &TARGETS {
        for (file, data) in corpus(target.name) {
            if let Err(why) = check(target, &data) {
                failures.push(format!("fuzz/corpus/{}/{file}: {why}", target.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_short_seeded_run_of_every_target_finds_nothing() {
    // The seed changes with the day, so CI explores a little further each day; a failure
    // prints the seed to replay it (`KEEL_FUZZ_SEED`).
    let seed = std::env::var("KEEL_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400)
    });
    for target in &TARGETS {
        // The config target parses and validates whole files: fewer of them.
        let iterations = if target.name == "config" { 300 } else { 2_000 };
        let run = run(target, iterations, seed);
        assert!(run.accepted > 0, "{}: no generated input was accepted", target.name);
    }
}

/// The long run: `KEEL_FUZZ_ITERS` inputs per target (default 10⁷), `KEEL_FUZZ_TARGET` for one
/// target only, `KEEL_FUZZ_SEED` (default 1). Prints one line per target for RESILIENCE.md.
#[test]
#[ignore = "the long run, by hand: see RESILIENCE.md, Fuzzing"]
fn long_run() {
    let iterations = std::env::var("KEEL_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let seed = std::env::var("KEEL_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let only = std::env::var("KEEL_FUZZ_TARGET").ok();
    for target in TARGETS.iter().filter(|t| only.as_deref().is_none_or(|only| only == t.name)) {
        let Run { inputs, accepted, took, slowest } = run(target, iterations, seed);
        println!(
            "fuzz {}: {inputs} inputs ({:.1}% accepted), seed {seed}, {:.1} s, slowest input {:.2} ms, 0 failures",
            target.name,
            accepted as f64 * 100.0 / inputs.max(1) as f64,
            took.as_secs_f64(),
            slowest.as_secs_f64() * 1e3
        );
    }
}
