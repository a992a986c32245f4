//! Health analysis of a run: recommendations computed from the measured numbers, each
//! naming its metric type, the evidence and the expected gain, and a 0-100 score with an
//! A-F grade. `backtest-perf analyze REPORT.json` prints it; the markdown report ends with
//! it ("## Health").
//!
//! # Thresholds
//!
//! | Finding | Warning | Critical |
//! |---|---|---|
//! | one metric type's share of the self time (getSignal and tick: info only, the strategy's own work) | 40% | 70% |
//! | p99 / median (100 calls or more, p99 50 µs or more above the median) | 10 | 50 |
//! | max / p99 (rare stalls; 100 calls or more, 1 ms or more above p99) | 20 | 100 |
//! | share of calls over their slow threshold | 1% | 10% |
//! | error rate | 0.1% | 5% |
//! | events that left the raw-event window | 50% | 90% (info only) |
//!
//! The score starts at 100 and loses 25 per critical finding and 10 per warning (the
//! information notes cost nothing), at least 0. Grades: A from 90, B from 80, C from 70,
//! D from 60, F below.
//!
//! Memory is not in the statistics: [`analyze_run`] reads it from a run tracker's report
//! when one was kept with memory tracking (`backtest --timeline`, the counting allocator
//! installed), and flags an operation that allocates 64 KiB or more per call on average
//! itself, its children's allocations left out (1 MiB: critical).

use serde::Serialize;

use crate::report::{escape, sig3};
use crate::stats::PerformanceStatistics;
use crate::thresholds::Thresholds;

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Priority {
    /// Act on it first.
    Critical,
    /// Worth a look.
    Warning,
    /// Good to know; costs no score.
    Info,
}

/// One recommendation.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// How much it matters.
    pub priority: Priority,
    /// What kind of problem: `hotspot`, `tail`, `stalls`, `slow`, `errors`, `coverage`.
    pub category: &'static str,
    /// The metric type it is about (empty for the run as a whole).
    pub metric: String,
    /// The measured numbers behind it.
    pub evidence: String,
    /// What to do.
    pub advice: String,
    /// What doing it could gain.
    pub expected_gain: String,
}

/// A run's health: its score, grade and findings, most important first.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// 0 to 100.
    pub score: u32,
    /// A to F.
    pub grade: char,
    /// One line.
    pub summary: String,
    /// Most important first (priority, then the size of the problem).
    pub findings: Vec<Finding>,
}

/// [`analyze`] with what a run tracker measured: allocations per operation.
///
/// ```
/// use backtest_perf::analysis::analyze_run;
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// let empty = PerformanceStatistics::compute(backtest_perf::StorageKey::new("A", "s"), vec![], 0, 0, StatsPreset::Seed);
/// assert_eq!(analyze_run(&empty, &Default::default(), None).score, 100);
/// ```
pub fn analyze_run(
    stats: &PerformanceStatistics,
    thresholds: &Thresholds,
    tracker: Option<&crate::tracker::TrackerReport>,
) -> Health {
    let mut extra = Vec::new();
    if let Some(report) = tracker {
        // What each operation allocated itself: a parent's reading includes its children's,
        // and a tick that only holds an allocating signal function is not the one to fix.
        let mut in_children: std::collections::HashMap<u64, u64> = Default::default();
        for event in &report.events {
            if let (Some(parent), Some(memory)) = (event.parent, &event.memory) {
                let sum = in_children.entry(parent).or_default();
                *sum = sum.saturating_add(memory.allocated);
            }
        }
        let mut by_name: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for event in &report.events {
            if let Some(memory) = &event.memory {
                let children = in_children.get(&event.id).copied().unwrap_or(0);
                let entry = by_name.entry(event.name.as_ref()).or_default();
                entry.0 += 1;
                entry.1 = entry
                    .1
                    .saturating_add(memory.allocated.saturating_sub(children));
            }
        }
        for (name, (calls, allocated)) in by_name {
            let per_call = allocated as f64 / calls.max(1) as f64;
            if per_call >= 64.0 * 1024.0 {
                extra.push((
                    per_call,
                    Finding {
                        priority: if per_call >= 1024.0 * 1024.0 {
                            Priority::Critical
                        } else {
                            Priority::Warning
                        },
                        category: "allocations",
                        metric: name.to_string(),
                        evidence: format!(
                            "{name} allocates {} KiB itself per call on average ({calls} calls measured, nested operations left out)",
                            sig3(per_call / 1024.0)
                        ),
                        advice: "reuse buffers across ticks (keep them in the strategy) instead of allocating them every call".to_string(),
                        expected_gain: format!("{} KiB fewer allocated per call", sig3(per_call / 1024.0)),
                    },
                ));
            }
        }
    }
    build(stats, thresholds, extra)
}

/// Analyzes `stats`, judging slowness by `thresholds`.
///
/// ```
/// use backtest_perf::analysis::analyze;
/// use backtest_perf::thresholds::Thresholds;
/// use backtest_perf::{MetricType, PerformanceContract, PerformanceEmitter, PerformanceService};
/// let bus = PerformanceEmitter::new();
/// let service = PerformanceService::attached(&bus);
/// for _ in 0..200 {
///     bus.emit(PerformanceContract::new(MetricType::GetCandles, 0.01, 1.0)).unwrap();
/// }
/// let health = analyze(&service.get_data("", ""), &Thresholds::default());
/// // Candle fetches hold all the self time: a critical hotspot, and nothing else.
/// assert_eq!((health.findings[0].category, health.findings[0].metric.as_str()), ("hotspot", "getCandles"));
/// assert_eq!((health.score, health.grade), (75, 'C'));
/// ```
pub fn analyze(stats: &PerformanceStatistics, thresholds: &Thresholds) -> Health {
    build(stats, thresholds, Vec::new())
}

fn build(
    stats: &PerformanceStatistics,
    thresholds: &Thresholds,
    extra: Vec<(f64, Finding)>,
) -> Health {
    let mut findings: Vec<(f64, Finding)> = extra;
    let finding = |priority, category, metric: &str, evidence, advice: &str, gain| Finding {
        priority,
        category,
        metric: metric.to_string(),
        evidence,
        advice: advice.to_string(),
        expected_gain: gain,
    };
    let self_total = stats.self_duration;
    for m in stats.metric_stats.values() {
        let name = m.metric_type.as_str();
        // Hotspots: where the self time goes.
        if self_total > 0.0 {
            let share = m.self_duration / self_total * 100.0;
            if share >= 40.0 {
                let advice = match name {
                    "getCandles" => {
                        "fetch fewer candles per call, or keep what earlier ticks fetched instead of re-reading the same window every tick"
                    }
                    "getSignal" => {
                        "profile the signal function (backtest --flamegraph, --timeline); precompute what does not change between ticks"
                    }
                    "getAveragePrice" => {
                        "the VWAP re-reads the last candles on every signal; signal less often or cache it per candle"
                    }
                    "backtest" => {
                        "positions are replayed candle by candle; shorter lifetimes or fewer signals replay less"
                    }
                    _ => "look inside it first: it holds most of the time",
                };
                // The strategy's own work dominating is expected: noted, not scored. The
                // engine's hooks or a user's step dominating is a problem.
                let priority = if name == "getSignal" || name == "tick" {
                    Priority::Info
                } else if share >= 70.0 {
                    Priority::Critical
                } else {
                    Priority::Warning
                };
                findings.push((
                    share,
                    finding(
                        priority,
                        "hotspot",
                        name,
                        format!(
                            "{name} is {share:.1}% of the self time ({} of {})",
                            crate::report::human(m.self_duration),
                            crate::report::human(self_total)
                        ),
                        advice,
                        format!("halving it saves {:.1}% of the time in hooks", share / 2.0),
                    ),
                ));
            }
        }
        if m.count >= 100 && m.median > 0.0 {
            // A heavy tail: a few calls dominate.
            let tail = m.p99 / m.median;
            // Only when the tail matters in absolute terms too (50 µs or more).
            if tail >= 10.0 && m.p99 - m.median >= 0.05 {
                findings.push((
                    tail,
                    finding(
                        if tail >= 50.0 { Priority::Critical } else { Priority::Warning },
                        "tail",
                        name,
                        format!("p99/median of {name} is {} (median {} ms, p99 {} ms)", sig3(tail), sig3(m.median), sig3(m.p99)),
                        "a few calls dominate: find what the slow ones do differently (backtest --timeline shows the slowest ticks)",
                        format!("bringing p99 to 3x the median saves about {}% of {name}'s time", sig3(((m.p99 - 3.0 * m.median) * m.count as f64 * 0.01 / m.total_duration * 100.0).clamp(0.0, 100.0))),
                    ),
                ));
            }
            // Rare stalls: the longest far beyond the 99th percentile.
            if m.p99 > 0.0 {
                let stall = m.max_duration / m.p99;
                // Only stalls of 1 ms or more: shorter ones are a pre-empted thread.
                if stall >= 20.0 && m.max_duration - m.p99 >= 1.0 {
                    findings.push((
                        stall,
                        finding(
                            if stall >= 100.0 { Priority::Critical } else { Priority::Warning },
                            "stalls",
                            name,
                            format!("the slowest {name} took {} ms, {}x its p99 of {} ms", sig3(m.max_duration), sig3(stall), sig3(m.p99)),
                            "rare stalls: blocking I/O, a lock, a sleep or an allocation burst inside the call; move it out of the hot path",
                            format!("up to {} ms of the run", sig3(m.max_duration - m.p99)),
                        ),
                    ));
                }
            }
        }
        // Errors.
        if m.error_rate >= 0.1 {
            findings.push((
                m.error_rate,
                finding(
                    if m.error_rate >= 5.0 { Priority::Critical } else { Priority::Warning },
                    "errors",
                    name,
                    format!("{} of {} {name} calls failed ({}%)", m.errors, m.count, sig3(m.error_rate)),
                    "failed calls (errors, rejected signals) cost time and produce nothing; fix the signal's prices or the error",
                    format!("{} failed calls fewer", m.errors),
                ),
            ));
        }
    }
    // Calls over their threshold, from the whole-run histograms.
    for (metric, aggregate) in &stats.aggregates {
        let threshold = thresholds.threshold_ms(metric.as_str());
        let count = aggregate.count();
        if count == 0 {
            continue;
        }
        let slow: u64 = aggregate
            .buckets()
            .iter()
            .filter(|(ms, _)| *ms > threshold)
            .map(|(_, n)| *n)
            .sum();
        let share = slow as f64 / count as f64 * 100.0;
        if share >= 1.0 {
            findings.push((
                share,
                finding(
                    if share >= 10.0 { Priority::Critical } else { Priority::Warning },
                    "slow",
                    metric.as_str(),
                    format!("{slow} of {count} {metric} calls ({}%) took longer than {threshold} ms", sig3(share)),
                    "the slow calls are listed after each run and in --timeline; or raise the threshold if it is wrong (--slow)",
                    format!("{slow} slow calls fewer"),
                ),
            ));
        }
    }
    if stats.total_events > 0 && stats.dropped > 0 {
        let left = stats.dropped as f64 / stats.total_events as f64 * 100.0;
        if left >= 50.0 {
            findings.push((
                left,
                finding(
                    Priority::Info,
                    "coverage",
                    "",
                    format!("{}% of the events left the raw-event window; the statistics still cover all of them", sig3(left)),
                    "compare tests the raw events: raise --max-events to keep more of them",
                    "a fuller comparison".to_string(),
                ),
            ));
        }
    }
    if let Some(note) = crate::report::sampling(stats) {
        findings.push((
            0.0,
            finding(
                Priority::Info,
                "coverage",
                "",
                format!("the run was sampled: {note}"),
                "counts are whole; durations come from the timed ones",
                "-".to_string(),
            ),
        ));
    }
    findings.sort_by(|a, b| a.1.priority.cmp(&b.1.priority).then(b.0.total_cmp(&a.0)));
    let findings: Vec<Finding> = findings.into_iter().map(|(_, f)| f).collect();
    let lost: u32 = findings
        .iter()
        .map(|f| match f.priority {
            Priority::Critical => 25,
            Priority::Warning => 10,
            Priority::Info => 0,
        })
        .sum();
    let score = 100u32.saturating_sub(lost);
    let grade = match score {
        90.. => 'A',
        80..=89 => 'B',
        70..=79 => 'C',
        60..=69 => 'D',
        _ => 'F',
    };
    let critical = findings
        .iter()
        .filter(|f| f.priority == Priority::Critical)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.priority == Priority::Warning)
        .count();
    let summary = match findings.first() {
        Some(top) if top.priority != Priority::Info => format!(
            "{score}/100 ({grade}): {critical} critical, {warnings} warning(s); first: {}",
            top.evidence
        ),
        _ => format!("{score}/100 ({grade}): nothing to act on"),
    };
    Health {
        score,
        grade,
        summary,
        findings,
    }
}

/// The health as a markdown section ("## Health").
///
/// ```
/// use backtest_perf::analysis::{analyze, markdown};
/// use backtest_perf::thresholds::Thresholds;
/// use backtest_perf::stats::{PerformanceStatistics, StatsPreset};
/// let empty = PerformanceStatistics::compute(backtest_perf::StorageKey::new("A", "s"), vec![], 0, 0, StatsPreset::Seed);
/// assert_eq!(markdown(&analyze(&empty, &Thresholds::default())), "\n## Health\n\n**Score:** 100/100 (A): nothing to act on\n");
/// ```
pub fn markdown(health: &Health) -> String {
    let mut out = format!("\n## Health\n\n**Score:** {}\n", health.summary);
    if health.findings.is_empty() {
        return out;
    }
    out.push_str("\n| Priority | Category | Metric | Evidence | Advice | Expected gain |\n|---|---|---|---|---|---|\n");
    for f in &health.findings {
        out.push_str(&format!(
            "| {:?} | {} | {} | {} | {} | {} |\n",
            f.priority,
            f.category,
            escape(&f.metric),
            escape(&f.evidence),
            escape(&f.advice),
            escape(&f.expected_gain)
        ));
    }
    out
}
