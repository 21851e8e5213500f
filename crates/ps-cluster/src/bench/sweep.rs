//! The pure part of a benchmark sweep: the configurations (every combination of the axes) and
//! their labels. A run's records and the figures made of them are in [`super::figures`]. No I/O.

use serde::Serialize;

/// The values to sweep, each axis at least one value.
#[derive(Debug, Clone)]
pub struct Axes {
    /// `None` is loopback with no emulated link.
    pub links: Vec<Option<String>>,
    pub push_codecs: Vec<String>,
    pub pull_codecs: Vec<String>,
    pub staleness: Vec<String>,
    /// `local --reads` values: fresh, overlapped.
    pub reads: Vec<String>,
    pub workers: Vec<u32>,
    pub devices: Vec<String>,
    /// `None` is no straggler model.
    pub straggle: Vec<Option<String>>,
}

/// One combination of the axes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub link: Option<String>,
    pub push_codec: String,
    pub pull_codec: String,
    pub staleness: String,
    pub reads: String,
    pub workers: u32,
    pub device: String,
    pub straggle: Option<String>,
}

impl Axes {
    /// Every combination, links outermost, stragglers innermost.
    pub fn configs(&self) -> Vec<Config> {
        let mut out = Vec::new();
        for link in &self.links {
            for push in &self.push_codecs {
                for pull in &self.pull_codecs {
                    for (st, reads) in self.staleness_and_reads() {
                        for &w in &self.workers {
                            for dev in &self.devices {
                                for sg in &self.straggle {
                                    out.push(Config {
                                        link: link.clone(),
                                        push_codec: push.clone(),
                                        pull_codec: pull.clone(),
                                        staleness: st.clone(),
                                        reads: reads.clone(),
                                        workers: w,
                                        device: dev.clone(),
                                        straggle: sg.clone(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Every (staleness, read policy) pair, read policies innermost.
    fn staleness_and_reads(&self) -> impl Iterator<Item = (&String, &String)> {
        self.staleness
            .iter()
            .flat_map(|st| self.reads.iter().map(move |r| (st, r)))
    }

    /// The axes with one value, as `name value` pairs (what every configuration shares).
    pub fn fixed(&self) -> Vec<String> {
        let v = self.varying();
        let mut out = Vec::new();
        let one = |x: &Option<String>, none: &str| x.clone().unwrap_or_else(|| none.into());
        if !v.link {
            out.push(format!("link {}", one(&self.links[0], "loopback")));
        }
        if !v.push {
            out.push(format!("push {}", self.push_codecs[0]));
        }
        if !v.pull {
            out.push(format!("pull {}", self.pull_codecs[0]));
        }
        if !v.staleness {
            out.push(format!("staleness {}", self.staleness[0]));
        }
        if !v.reads {
            out.push(format!("reads {}", self.reads[0]));
        }
        if !v.workers {
            out.push(format!("{} workers", self.workers[0]));
        }
        if !v.device {
            out.push(format!("device {}", self.devices[0]));
        }
        if !v.straggle {
            out.push(format!("straggle {}", one(&self.straggle[0], "none")));
        }
        out
    }

    /// The axes with more than one value: the ones a label needs to tell configurations apart.
    pub fn varying(&self) -> Varying {
        Varying {
            link: self.links.len() > 1,
            push: self.push_codecs.len() > 1,
            pull: self.pull_codecs.len() > 1,
            staleness: self.staleness.len() > 1,
            reads: self.reads.len() > 1,
            workers: self.workers.len() > 1,
            device: self.devices.len() > 1,
            straggle: self.straggle.len() > 1,
        }
    }
}

/// Which axes vary in a sweep.
#[derive(Debug, Clone, Copy, Default)]
pub struct Varying {
    pub link: bool,
    pub push: bool,
    pub pull: bool,
    pub staleness: bool,
    pub reads: bool,
    pub workers: bool,
    pub device: bool,
    pub straggle: bool,
}

impl Config {
    /// A short name from the axes that vary (`"all"` when none does).
    pub fn label(&self, v: Varying) -> String {
        let mut parts = Vec::new();
        if v.link {
            parts.push(self.link.clone().unwrap_or_else(|| "loopback".into()));
        }
        if v.push {
            parts.push(format!("push {}", self.push_codec));
        }
        if v.pull {
            parts.push(format!("pull {}", self.pull_codec));
        }
        if v.staleness {
            parts.push(format!("s={}", self.staleness));
        }
        if v.reads {
            parts.push(format!("reads {}", self.reads));
        }
        if v.workers {
            parts.push(format!("{}w", self.workers));
        }
        if v.device {
            parts.push(self.device.clone());
        }
        if v.straggle {
            parts.push(match &self.straggle {
                Some(s) => format!("straggle {s}"),
                None => "no straggle".into(),
            });
        }
        if parts.is_empty() {
            "all".into()
        } else {
            parts.join(" | ")
        }
    }

    /// The flags of `ps-cluster local` for this configuration.
    pub fn local_args(&self) -> Vec<String> {
        let mut a = vec![
            "--push-codec".into(),
            self.push_codec.clone(),
            "--pull-codec".into(),
            self.pull_codec.clone(),
            "--staleness".into(),
            self.staleness.clone(),
            "--reads".into(),
            self.reads.clone(),
            "--workers".into(),
            self.workers.to_string(),
            "--device".into(),
            self.device.clone(),
        ];
        if let Some(l) = &self.link {
            a.extend(["--link".into(), l.clone()]);
        }
        if let Some(s) = &self.straggle {
            a.extend(["--straggle".into(), s.clone()]);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axes() -> Axes {
        Axes {
            links: vec![None, Some("1gbit,100us".into())],
            push_codecs: vec!["raw".into(), "topk:0.01,f16".into()],
            pull_codecs: vec!["raw".into()],
            staleness: vec!["0".into(), "inf".into()],
            reads: vec!["fresh".into()],
            workers: vec![2],
            devices: vec!["cpu".into()],
            straggle: vec![Some("0.1:4".into())],
        }
    }

    #[test]
    fn configs_are_every_combination_with_labels_of_what_varies() {
        let a = axes();
        let c = a.configs();
        assert_eq!(c.len(), 8);
        let labels: Vec<String> = c.iter().map(|x| x.label(a.varying())).collect();
        assert_eq!(labels[0], "loopback | push raw | s=0");
        assert_eq!(labels[7], "1gbit,100us | push topk:0.01,f16 | s=inf");
        let args = c[7].local_args();
        let at = |f: &str| args[args.iter().position(|x| x == f).unwrap() + 1].clone();
        assert_eq!(at("--link"), "1gbit,100us");
        assert_eq!(at("--push-codec"), "topk:0.01,f16");
        assert_eq!(at("--straggle"), "0.1:4");
        assert!(!c[0].local_args().contains(&"--link".to_string()));
        assert_eq!(
            a.fixed(),
            [
                "pull raw",
                "reads fresh",
                "2 workers",
                "device cpu",
                "straggle 0.1:4"
            ]
        );
        assert_eq!(at("--reads"), "fresh");
        // Read policies vary innermost of staleness and name themselves in labels.
        let both = Axes {
            reads: vec!["fresh".into(), "overlapped".into()],
            ..axes()
        };
        let c = both.configs();
        assert_eq!(c.len(), 16);
        assert_eq!(
            (c[0].staleness.as_str(), c[1].staleness.as_str()),
            ("0", "0")
        );
        assert_eq!(
            c[1].label(both.varying()),
            "loopback | push raw | s=0 | reads overlapped"
        );
    }
}
