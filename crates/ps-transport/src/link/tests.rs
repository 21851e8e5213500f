//! Link tests: parsing and writing link specs, serialisation time, and the loss draws' PRNG.

use super::rng::{next_rand, splitmix64, unit_f64};
use super::*;
use std::time::Duration;

fn p(s: &str) -> LinkSpec {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn parses_examples() {
    let l = p("1gbit,100us,0.0");
    assert_eq!(l.bandwidth_bps, 1_000_000_000);
    assert_eq!(l.latency, Duration::from_micros(100));
    assert_eq!(l.loss, 0.0);
    assert_eq!(l.queue_bytes, 1 << 20); // 2 x BDP = 25 kB, below the floor

    let l = p("100mbit,2ms");
    assert_eq!(l.bandwidth_bps, 100_000_000);
    assert_eq!(l.latency, Duration::from_millis(2));
    assert_eq!(l.loss, 0.0);
    assert_eq!(l.queue_bytes, 1 << 20); // 2 x 25 kB, below the floor

    let l = p("10gbit,50us,0.001");
    assert_eq!(l.bandwidth_bps, 10_000_000_000);
    assert_eq!(l.latency, Duration::from_micros(50));
    assert_eq!(l.loss, 0.001);
    assert_eq!(l.queue_bytes, 1 << 20); // 2 x 62.5 kB, below the floor

    let l = p("500kbit,1ms");
    assert_eq!(l.bandwidth_bps, 500_000);
    assert_eq!(l.latency, Duration::from_millis(1));

    assert_eq!(p("1Gbps,1s").bandwidth_bps, 1_000_000_000);
    assert_eq!(p("20mbps,0us").latency, Duration::ZERO);
    assert_eq!(p("1500bit,1ns").bandwidth_bps, 1500);
    assert_eq!(p("2.5gbit,0.5ms").bandwidth_bps, 2_500_000_000);
    assert_eq!(p("2.5gbit,0.5ms").latency, Duration::from_micros(500));
    assert_eq!(p(" 1gbit , 100us , 0.01 , 8kib ").queue_bytes, 8192);
    assert_eq!(p("1gbit,100us,0,6000").queue_bytes, 6000);
    assert_eq!(p("1gbit,100us,0,2mb").queue_bytes, 2_000_000);
    assert_eq!(p("1gbit,100us,0,1mib").queue_bytes, 1 << 20);
}

#[test]
fn display_round_trips() {
    for s in [
        "1gbit,100us,0.0",
        "100mbit,2ms",
        "10gbit,50us,0.001",
        "500kbit,1ms",
        "1500bit,1ns,0.5",
        "2.5gbit,0.5ms,0.02,6000",
        "1gbit,1s,0,8kib",
        "1gbit,0us,0,3mib",
        "7bit,123456789ns,0.999",
        "20mbit,1ms,0,70000b",
    ] {
        let spec = p(s);
        let shown = spec.to_string();
        assert_eq!(p(&shown), spec, "{s} -> {shown}");
    }
    assert_eq!(p("1gbit,100us,0.0").to_string(), "1gbit,100us,0");
    assert_eq!(p("10gbit,50us,0.001").to_string(), "10gbit,50us,0.001");
    assert_eq!(p("100mbit,2ms,0,8kib").to_string(), "100mbit,2ms,0,8kib");
    assert_eq!(p("2.5gbit,1000us").to_string(), "2500mbit,1ms,0");
}

#[test]
fn rejects_nonsense() {
    use LinkError::*;
    let e = |s: &str| s.parse::<LinkSpec>().unwrap_err();
    assert!(matches!(e(""), Shape(_)));
    assert!(matches!(e("1gbit"), Shape(_)));
    assert!(matches!(e("1gbit,1ms,0,1kib,x"), Shape(_)));
    assert!(matches!(e("0gbit,1ms"), Bandwidth(_)));
    assert!(matches!(e("0.0001bit,1ms"), Bandwidth(_)));
    assert!(matches!(e("-1gbit,1ms"), Bandwidth(_)));
    assert!(matches!(e("1gbyte,1ms"), Bandwidth(_)));
    assert!(matches!(e("1,1ms"), Bandwidth(_)));
    assert!(matches!(e("gbit,1ms"), Bandwidth(_)));
    assert!(matches!(e("infgbit,1ms"), Bandwidth(_)));
    assert!(matches!(e("1gbit,-1ms"), Latency(_)));
    assert!(matches!(e("1gbit,1"), Latency(_)));
    assert!(matches!(e("1gbit,1min"), Latency(_)));
    assert!(matches!(e("1gbit,1ms,1.0"), Loss(_)));
    assert!(matches!(e("1gbit,1ms,-0.1"), Loss(_)));
    assert!(matches!(e("1gbit,1ms,NaN"), Loss(_)));
    assert!(matches!(e("1gbit,1ms,5%"), Loss(_)));
    assert!(matches!(e("1gbit,1ms,0,0"), Queue(_)));
    assert!(matches!(e("1gbit,1ms,0,-5kb"), Queue(_)));
    assert!(matches!(e("1gbit,1ms,0,1gb"), Queue(_)));
    let msg = e("1gbit,1ms,2").to_string();
    assert!(msg.contains("[0, 1)"), "{msg}");

    let mut bad = LinkSpec::new(1_000_000, Duration::from_millis(1), 0.0);
    bad.bandwidth_bps = 0;
    assert!(bad.validate().is_err());
    let mut bad = LinkSpec::new(1_000_000, Duration::from_millis(1), 0.0);
    bad.loss = f64::NAN;
    assert!(bad.validate().is_err());
}

#[test]
fn serialisation_time_is_never_short() {
    let l = p("1gbit,0us");
    assert_eq!(l.serialisation_time(1500), Duration::from_nanos(12_000));
    let l = p("3bit,0us");
    // 8 bits at 3 bit/s: 2.666.. s, rounded up.
    assert_eq!(l.serialisation_time(1), Duration::from_nanos(2_666_666_667));
}

#[test]
fn prng_is_uniformish() {
    let mut s = splitmix64(7) | 1;
    let n = 100_000;
    let hits = (0..n)
        .filter(|_| unit_f64(next_rand(&mut s)) < 0.02)
        .count();
    let rate = hits as f64 / n as f64;
    assert!((0.017..0.023).contains(&rate), "{rate}");
}
