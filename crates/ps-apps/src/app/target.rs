//! A quality bar on a per-clock figure: `test_rmse<=0.115`, `test_accuracy>=0.95`.

use std::fmt;

/// A per-clock figure ([`super::App::clock_metrics`]) and the value it must reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub metric: String,
    pub lower_is_better: bool,
    pub value: f64,
}

impl Target {
    /// `METRIC<=VALUE` or `METRIC>=VALUE`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let bad = || format!("expected METRIC<=VALUE or METRIC>=VALUE, got {s:?}");
        let (metric, value, lower_is_better) = if let Some((m, v)) = s.split_once("<=") {
            (m, v, true)
        } else if let Some((m, v)) = s.split_once(">=") {
            (m, v, false)
        } else {
            return Err(bad());
        };
        let metric = metric.trim();
        let value: f64 = value.trim().parse().map_err(|_| bad())?;
        if metric.is_empty() || !value.is_finite() {
            return Err(bad());
        }
        Ok(Target {
            metric: metric.to_string(),
            lower_is_better,
            value,
        })
    }

    /// Whether `v` reaches the bar.
    pub fn met(&self, v: f64) -> bool {
        if self.lower_is_better {
            v <= self.value
        } else {
            v >= self.value
        }
    }

    /// A target on a figure of the app: `metric` among `names`, or an error naming them.
    pub fn check(&self, app: &str, names: &[&str]) -> Result<(), String> {
        if names.contains(&self.metric.as_str()) {
            Ok(())
        } else {
            Err(format!(
                "--app {app} has no per-clock figure {:?} (it has: {})",
                self.metric,
                names.join(", ")
            ))
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.lower_is_better { "<=" } else { ">=" };
        write!(f, "{}{op}{}", self.metric, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_judge() {
        let t = Target::parse("test_rmse<=0.11").unwrap();
        assert!(t.lower_is_better && t.met(0.11) && !t.met(0.12));
        assert_eq!(t.to_string(), "test_rmse<=0.11");
        let t = Target::parse(" test_accuracy >= 0.95").unwrap();
        assert!(!t.lower_is_better && t.met(0.96) && !t.met(0.9));
        for bad in ["test_rmse", "test_rmse<0.1", "<=0.1", "x<=nan", "x>=abc"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let e = t.check("mf", &["train_rmse", "test_rmse"]).unwrap_err();
        assert!(
            e.contains("test_accuracy") && e.contains("train_rmse, test_rmse"),
            "{e}"
        );
    }
}
