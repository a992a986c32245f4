//! Subscribe to the bus, time some work of your own, and dump the report.
//!
//! ```sh
//! cargo run --example listen_and_dump
//! ```

use backtest_perf::{MetricType, Performance, PerformanceContract, listen_performance, time};

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
    for window in [5, 20, 50, 200, 1000] {
        // One event per call, measured once with the crate's clock; a `time` inside
        // this closure would be nested under it.
        let averages = time("movingAverage", "BTCUSDT", "my-strategy", || {
            moving_average(&prices, window)
        });
        std::hint::black_box(averages);
    }
    slow.flush();

    let stats = Performance::get_data("BTCUSDT", "my-strategy");
    let work = &stats.metric_stats[&MetricType::custom("movingAverage")];
    println!(
        "{} events, {:.3} ms in total, p95 {:.3} ms",
        stats.total_events, stats.total_duration, work.p95
    );
    let path = Performance::dump("BTCUSDT", "my-strategy")?;
    println!("report written to {}", path.display());
    Ok(())
}
