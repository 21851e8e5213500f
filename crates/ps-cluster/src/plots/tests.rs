use super::*;

fn sweep(n: usize) -> (Vec<QualitySeries>, Vec<TimeSplit>, Vec<BytesQuality>) {
    let mut series = Vec::new();
    let mut splits = Vec::new();
    let mut points = Vec::new();
    for c in 0..n {
        let label = format!("staleness={c} push=f16");
        let rate = 0.5 + c as f64 * 0.3;
        let pts = (0..20)
            .map(|k| {
                let t = k as f64 * (0.2 + 0.05 * c as f64);
                (t, 0.1 + 1.5 * (-rate * t).exp())
            })
            .collect();
        series.push(QualitySeries {
            label: label.clone(),
            points: pts,
        });
        splits.push(TimeSplit {
            label: label.clone(),
            compute_s: 0.08 + 0.01 * c as f64,
            comm_s: 0.03 + 0.02 * c as f64,
            blocked_s: 0.01 * c as f64,
        });
        points.push(BytesQuality {
            label,
            bytes: 2e6 * (c as f64 + 1.0).powi(2),
            quality: 0.105 + 0.01 * c as f64,
        });
    }
    (series, splits, points)
}

/// For looking at the figures: `PS_PLOTS_KEEP=/some/dir cargo test -p ps-cluster --lib plots`
/// copies them there, each name's stem followed by `suffix`.
fn keep(dir: &Path, suffix: &str) {
    let Some(to) = std::env::var_os("PS_PLOTS_KEEP") else {
        return;
    };
    for stem in STEMS {
        for ext in ["png", "svg"] {
            let from = dir.join(format!("{stem}.{ext}"));
            let _ = std::fs::copy(from, Path::new(&to).join(format!("{stem}{suffix}.{ext}")));
        }
    }
}

const STEMS: [&str; 3] = ["quality_vs_wall", "time_split", "bytes_vs_quality"];

fn check_svgs(dir: &Path, metric: &str) {
    for stem in STEMS {
        let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{stem}"
        );
        assert!(svg.contains(metric), "{stem}.svg lacks {metric}");
    }
}

fn check_pngs(dir: &Path) {
    for stem in STEMS {
        let png = std::fs::read(dir.join(format!("{stem}.png"))).unwrap();
        assert!(png.len() > 1000, "{stem}.png is {} bytes", png.len());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png signature");
    }
}

/// The font this machine has, or None (then only the SVG path can be checked).
fn have_font() -> bool {
    match font::ensure_font() {
        FontState::Loaded(path) => {
            eprintln!("font: {}", path.display());
            true
        }
        FontState::Missing(tried) => {
            eprintln!("no font here (tried {tried:?}): PNG checks skipped");
            false
        }
    }
}

#[test]
fn draws_the_six_files_of_a_small_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let (series, splits, points) = sweep(3);
    let result = draw_all(
        dir.path(),
        "test_rmse",
        true,
        Some(0.12),
        &series,
        &splits,
        &points,
    );
    if have_font() {
        let written = result.unwrap();
        assert_eq!(written.len(), 6);
        for p in &written {
            assert!(p.exists(), "{}", p.display());
        }
        check_pngs(dir.path());
    } else {
        assert!(matches!(result, Err(PlotError::NoFont { ref written, .. }) if written.len() == 3));
    }
    check_svgs(dir.path(), "test_rmse");
    keep(dir.path(), "");
}

#[test]
fn without_a_font_writes_the_svgs_only() {
    let dir = tempfile::tempdir().unwrap();
    let (series, splits, points) = sweep(3);
    let written = draw_all_with(
        dir.path(),
        false,
        "test_auc",
        false,
        None,
        &series,
        &splits,
        &points,
    )
    .unwrap();
    assert_eq!(written.len(), 3);
    assert!(written.iter().all(|p| p.extension().unwrap() == "svg"));
    check_svgs(dir.path(), "test_auc");
    keep(dir.path(), "_nofont");
    for stem in STEMS {
        assert!(!dir.path().join(format!("{stem}.png")).exists());
    }
}

/// Every degenerate input draws (with and without a font) and never panics.
#[test]
fn degenerate_inputs_do_not_panic() {
    let long = "x".repeat(500) + "é<&>\"";
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let series = vec![
        QualitySeries {
            label: "empty".into(),
            points: vec![],
        },
        QualitySeries {
            label: "one".into(),
            points: vec![(1.0, 0.5)],
        },
        QualitySeries {
            label: "flat".into(),
            points: vec![(0.0, 0.5), (0.0, 0.5), (0.0, 0.5)],
        },
        QualitySeries {
            label: long.clone(),
            points: vec![(nan, 1.0), (1.0, inf), (2.0, -inf), (3.0, 0.2), (4.0, nan)],
        },
    ];
    let splits = vec![
        TimeSplit {
            label: long.clone(),
            compute_s: nan,
            comm_s: inf,
            blocked_s: -1.0,
        },
        TimeSplit {
            label: "zero".into(),
            compute_s: 0.0,
            comm_s: 0.0,
            blocked_s: 0.0,
        },
    ];
    let points = vec![
        BytesQuality {
            label: "zero bytes".into(),
            bytes: 0.0,
            quality: 0.3,
        },
        BytesQuality {
            label: long.clone(),
            bytes: 5e5,
            quality: 0.3,
        },
        BytesQuality {
            label: "nan".into(),
            bytes: nan,
            quality: 0.3,
        },
        BytesQuality {
            label: "same".into(),
            bytes: 5e5,
            quality: 0.3,
        },
    ];
    let huge = vec![QualitySeries {
        label: "huge".into(),
        points: vec![(0.0, -1e308), (1e308, 1e308), (2.0, 1e99)],
    }];
    let tiny = vec![
        BytesQuality {
            label: "tiny".into(),
            bytes: 1e-320,
            quality: 1e-310,
        },
        BytesQuality {
            label: "huge".into(),
            bytes: 1e99,
            quality: -1e99,
        },
    ];
    let huge_split = vec![TimeSplit {
        label: "huge".into(),
        compute_s: 1e99,
        comm_s: 1e300,
        blocked_s: 1e99,
    }];
    type Case<'a> = (
        &'a [QualitySeries],
        &'a [TimeSplit],
        &'a [BytesQuality],
        Option<f64>,
    );
    let cases: Vec<Case> = vec![
        (&[], &[], &[], None),
        (&[], &[], &[], Some(0.5)),
        (&series, &splits, &points, Some(nan)),
        (&series[..2], &splits[1..], &points[1..2], Some(0.5)),
        (&huge, &huge_split, &tiny, Some(inf)),
    ];
    let font = have_font();
    for (k, (s, t, p, target)) in cases.into_iter().enumerate() {
        for with_font in [false, font] {
            let dir = tempfile::tempdir().unwrap();
            let written = draw_all_with(dir.path(), with_font, "m", true, target, s, t, p)
                .unwrap_or_else(|e| panic!("case {k} (font {with_font}): {e}"));
            assert_eq!(written.len(), if with_font { 6 } else { 3 }, "case {k}");
            check_svgs(dir.path(), "m");
            if with_font {
                check_pngs(dir.path());
                keep(dir.path(), &format!("_degenerate{k}"));
            }
        }
    }
}

#[test]
fn thirty_configurations_have_distinct_looks() {
    let looks: Vec<_> = (0..30).map(|i| (colour(i), variant(i))).collect();
    for (i, a) in looks.iter().enumerate() {
        assert!(!looks[..i].contains(a), "configuration {i} repeats a look");
    }
    let dir = tempfile::tempdir().unwrap();
    let (series, splits, points) = sweep(30);
    let with_font = have_font();
    let written = draw_all_with(
        dir.path(),
        with_font,
        "test_rmse",
        true,
        None,
        &series,
        &splits,
        &points,
    )
    .unwrap();
    assert_eq!(written.len(), if with_font { 6 } else { 3 });
    keep(dir.path(), "_30");
}

#[test]
fn helpers() {
    assert_eq!(truncate("abcdef", 4), "abc…");
    assert_eq!(truncate("abc", 4), "abc");
    assert_eq!(truncate("ééééé", 3), "éé…");
    assert_eq!(padded([2.0, 2.0].into_iter()), (1.8, 2.2));
    assert_eq!(padded([0.0].into_iter()), (-1.0, 1.0));
    assert_eq!(padded([f64::NAN].into_iter()), (0.0, 1.0));
    assert_eq!(fmt_num(0.10520), "0.1052");
    assert_eq!(fmt_num(1234.4), "1234");
    assert_eq!(fmt_bytes(1_933_440.0), "1.933 MB");
}
