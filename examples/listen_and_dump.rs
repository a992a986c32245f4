//! Subscribe to the bus, time some work of your own, and dump the report.
//!
//! ```sh
//! cargo run --example listen_and_dump
//! ```

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use backtest_perf::{
    MetricType, Performance, PerformanceContract, listen_performance, performance_emitter,
};

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Some work worth timing: a moving average over a price series.
fn moving_average(prices: &[f64], window: usize) -> Vec<f64> {
    prices
        .windows(window)
        .map(|w| w.iter().sum::<f64>() / window as f64)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Warn about anything slower than 1 ms, off the emitting thread.
    let slow = listen_performance(|e: &PerformanceContract| {
        if e.duration > 1.0 {
            println!(
                "slow {} for {}: {:.3} ms",
                e.metric_type,
                e.strategy_name.map_or("?", |s| s.as_str()),
                e.duration
            );
        }
    });

    let prices: Vec<f64> = (0..50_000)
        .map(|i| 100.0 + (i as f64 / 500.0).sin() * 5.0)
        .collect();
    let work = MetricType::custom("movingAverage");
    for window in [5, 20, 50, 200, 1000] {
        let started = Instant::now();
        let averages = moving_average(&prices, window);
        let event =
            PerformanceContract::new(work, started.elapsed().as_secs_f64() * 1000.0, now_ms())
                .with_symbol("BTCUSDT")
                .with_strategy("my-strategy");
        performance_emitter().emit(event)?;
        std::hint::black_box(averages);
    }
    slow.flush();

    let stats = Performance::get_data("BTCUSDT", "my-strategy");
    println!(
        "{} events, {:.3} ms in total, p95 {:.3} ms",
        stats.total_events, stats.total_duration, stats.metric_stats[&work].p95
    );
    let path = Performance::dump("BTCUSDT", "my-strategy")?;
    println!("report written to {}", path.display());
    Ok(())
}
