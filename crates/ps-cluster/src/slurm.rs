//! What a task of a Slurm job step is, from the variables Slurm sets: its role, the coordinator's
//! host, the cluster's size and the name of the job's certificate directory. Pure: it reads a map
//! of variables, so every case is a deterministic unit test; `slurm_run` does the I/O.
//!
//! The role rule: task `SLURM_PROCID` 0 is the coordinator, tasks 1..=S are the shards 0..S-1
//! (S = `--servers`), and the remaining `SLURM_NTASKS - 1 - S` tasks are the workers 0.. in
//! task order. The coordinator's host is the first host of the step's node list
//! (`SLURM_STEP_NODELIST`, else `SLURM_JOB_NODELIST`), where Slurm places task 0 under its block
//! and cyclic distributions.

use crate::hostlist::{self, HostlistError};
use std::collections::HashMap;
use thiserror::Error;

pub const PROCID: &str = "SLURM_PROCID";
pub const NTASKS: &str = "SLURM_NTASKS";
pub const LOCALID: &str = "SLURM_LOCALID";
pub const JOB_ID: &str = "SLURM_JOB_ID";
pub const JOB_NODELIST: &str = "SLURM_JOB_NODELIST";
pub const STEP_NODELIST: &str = "SLURM_STEP_NODELIST";
pub const STEP_ID: &str = "SLURM_STEP_ID";
pub const RESTART_COUNT: &str = "SLURM_RESTART_COUNT";
pub const NODENAME: &str = "SLURMD_NODENAME";

/// The most workers a job may have (as `--workers` allows).
pub const MAX_WORKERS: u32 = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SlurmError {
    #[error("{var} is not set: run `ps-cluster slurm` as a task of a Slurm job step (srun inside sbatch or salloc)")]
    Missing { var: &'static str },
    #[error("{var}={value:?}: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: String,
    },
    #[error("{var}: {source}")]
    Hostlist {
        var: &'static str,
        source: HostlistError,
    },
    #[error("{PROCID}={procid} is not below {NTASKS}={ntasks}")]
    ProcidOutOfRange { procid: u32, ntasks: u32 },
    #[error("{NTASKS}={ntasks} is too few for a coordinator, {servers} shard(s) (--servers) and at least one worker: run at least {} tasks", u64::from(*servers) + 2)]
    TooFewTasks { ntasks: u32, servers: u32 },
    #[error("--workers {given} does not match {NTASKS}={ntasks}: with --servers {servers}, the tasks after the coordinator and the shards are {derived} workers (leave --workers out to take that number)")]
    WorkersMismatch {
        given: u32,
        derived: u32,
        ntasks: u32,
        servers: u32,
    },
    #[error("--servers must be at least 1")]
    NoServers,
    #[error(
        "{NTASKS}={ntasks} with --servers {servers} makes {workers} workers: at most {MAX_WORKERS}"
    )]
    TooManyWorkers {
        ntasks: u32,
        servers: u32,
        workers: u32,
    },
    #[error("task 0 (the coordinator) runs on {here} ({NODENAME}), but the other tasks will look for it on {first}, the first host of {var}: use a block or cyclic task distribution")]
    CoordinatorNotFirst {
        here: String,
        first: String,
        var: &'static str,
    },
}

/// What Slurm told this task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmEnv {
    pub procid: u32,
    pub ntasks: u32,
    pub localid: u32,
    pub job_id: String,
    pub step_id: Option<String>,
    pub restart_count: u32,
    /// The expanded node list, in Slurm's order.
    pub nodes: Vec<String>,
    /// Which variable the node list came from.
    pub nodelist_var: &'static str,
    /// This task's node (`SLURMD_NODENAME`), if set.
    pub node_name: Option<String>,
}

/// A task's part in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Coordinator,
    Shard(u32),
    Worker(u32),
}

impl Role {
    /// The certificate (and node) name: `coordinator`, `shard-N`, `worker-N`.
    pub fn node_name(self) -> String {
        match self {
            Role::Coordinator => "coordinator".into(),
            Role::Shard(i) => format!("shard-{i}"),
            Role::Worker(i) => format!("worker-{i}"),
        }
    }
}

/// The job's shape as this task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub role: Role,
    pub servers: u32,
    pub workers: u32,
    /// The host every task dials the coordinator on.
    pub coordinator_host: String,
    /// Every node's certificate name: the coordinator, the shards, the workers.
    pub node_names: Vec<String>,
}

fn required<'a>(
    vars: &'a HashMap<String, String>,
    var: &'static str,
) -> Result<&'a str, SlurmError> {
    match vars.get(var).map(|v| v.trim()) {
        None => Err(SlurmError::Missing { var }),
        Some("") => Err(SlurmError::Invalid {
            var,
            value: String::new(),
            why: "empty".into(),
        }),
        Some(v) => Ok(v),
    }
}

fn number(vars: &HashMap<String, String>, var: &'static str) -> Result<u32, SlurmError> {
    let v = required(vars, var)?;
    v.parse().map_err(|e| SlurmError::Invalid {
        var,
        value: v.into(),
        why: format!("not a non-negative integer ({e})"),
    })
}

/// A job or step id is used in a file name: letters, digits, `_`, `-` and `.` only.
fn file_safe(vars: &HashMap<String, String>, var: &'static str) -> Result<String, SlurmError> {
    let v = required(vars, var)?;
    let ok = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !v.starts_with('.');
    if !ok {
        return Err(SlurmError::Invalid {
            var,
            value: v.into(),
            why: "expected letters, digits, '_', '-' or '.'".into(),
        });
    }
    Ok(v.into())
}

impl SlurmEnv {
    /// Reads the variables Slurm sets for a task. `SLURM_PROCID`, `SLURM_NTASKS`,
    /// `SLURM_LOCALID`, `SLURM_JOB_ID` and a node list are required; `SLURM_STEP_ID`,
    /// `SLURM_RESTART_COUNT` and `SLURMD_NODENAME` are used when set.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<SlurmEnv, SlurmError> {
        let procid = number(vars, PROCID)?;
        let ntasks = number(vars, NTASKS)?;
        let localid = number(vars, LOCALID)?;
        let job_id = file_safe(vars, JOB_ID)?;
        let step_id = match vars.contains_key(STEP_ID) {
            true => Some(file_safe(vars, STEP_ID)?),
            false => None,
        };
        let restart_count = match vars.contains_key(RESTART_COUNT) {
            true => number(vars, RESTART_COUNT)?,
            false => 0,
        };
        let nodelist_var = if vars
            .get(STEP_NODELIST)
            .is_some_and(|v| !v.trim().is_empty())
        {
            STEP_NODELIST
        } else {
            JOB_NODELIST
        };
        let nodes = hostlist::expand(required(vars, nodelist_var)?).map_err(|source| {
            SlurmError::Hostlist {
                var: nodelist_var,
                source,
            }
        })?;
        if ntasks == 0 {
            return Err(SlurmError::Invalid {
                var: NTASKS,
                value: "0".into(),
                why: "a job step has at least one task".into(),
            });
        }
        if procid >= ntasks {
            return Err(SlurmError::ProcidOutOfRange { procid, ntasks });
        }
        let node_name = vars
            .get(NODENAME)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        Ok(SlurmEnv {
            procid,
            ntasks,
            localid,
            job_id,
            step_id,
            restart_count,
            nodes,
            nodelist_var,
            node_name,
        })
    }

    /// The name of the job step's directory under the shared directory:
    /// `ps-job<ID>[-step<STEP>][-restart<N>]`.
    pub fn job_dir_name(&self) -> String {
        let mut name = format!("ps-job{}", self.job_id);
        if let Some(step) = &self.step_id {
            name.push_str(&format!("-step{step}"));
        }
        if self.restart_count > 0 {
            name.push_str(&format!("-restart{}", self.restart_count));
        }
        name
    }

    /// This task's role and the job's shape, for `servers` shards. `workers` is `--workers` if
    /// it was given: it must then equal the derived count.
    pub fn layout(&self, servers: u32, workers: Option<u32>) -> Result<Layout, SlurmError> {
        if servers == 0 {
            return Err(SlurmError::NoServers);
        }
        let ntasks = self.ntasks;
        if u64::from(ntasks) < u64::from(servers) + 2 {
            return Err(SlurmError::TooFewTasks { ntasks, servers });
        }
        let derived = ntasks - 1 - servers;
        if derived > MAX_WORKERS {
            return Err(SlurmError::TooManyWorkers {
                ntasks,
                servers,
                workers: derived,
            });
        }
        if let Some(given) = workers.filter(|&w| w != derived) {
            return Err(SlurmError::WorkersMismatch {
                given,
                derived,
                ntasks,
                servers,
            });
        }
        let role = match self.procid {
            0 => Role::Coordinator,
            p if p <= servers => Role::Shard(p - 1),
            p => Role::Worker(p - 1 - servers),
        };
        let first = self.nodes[0].clone();
        if let (Role::Coordinator, Some(here)) = (role, &self.node_name) {
            if *here != first {
                return Err(SlurmError::CoordinatorNotFirst {
                    here: here.clone(),
                    first,
                    var: self.nodelist_var,
                });
            }
        }
        let mut node_names = vec![Role::Coordinator.node_name()];
        node_names.extend((0..servers).map(|i| Role::Shard(i).node_name()));
        node_names.extend((0..derived).map(|i| Role::Worker(i).node_name()));
        Ok(Layout {
            role,
            servers,
            workers: derived,
            coordinator_host: first,
            node_names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What srun sets for task `procid` of `ntasks` on one node.
    fn vars(procid: u32, ntasks: u32, nodelist: &str) -> HashMap<String, String> {
        [
            (PROCID, procid.to_string()),
            (NTASKS, ntasks.to_string()),
            (LOCALID, procid.to_string()),
            (JOB_ID, "4242".into()),
            (JOB_NODELIST, nodelist.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn layout(procid: u32, ntasks: u32, servers: u32) -> Result<Layout, SlurmError> {
        SlurmEnv::from_vars(&vars(procid, ntasks, "node[01-03]"))?.layout(servers, None)
    }

    #[test]
    fn roles_follow_the_task_rank() {
        let roles: Vec<Role> = (0..6).map(|p| layout(p, 6, 2).unwrap().role).collect();
        assert_eq!(
            roles,
            [
                Role::Coordinator,
                Role::Shard(0),
                Role::Shard(1),
                Role::Worker(0),
                Role::Worker(1),
                Role::Worker(2)
            ]
        );
        let l = layout(4, 6, 2).unwrap();
        assert_eq!((l.servers, l.workers), (2, 3));
        assert_eq!(l.coordinator_host, "node01");
        assert_eq!(
            l.node_names,
            [
                "coordinator",
                "shard-0",
                "shard-1",
                "worker-0",
                "worker-1",
                "worker-2"
            ]
        );
    }

    #[test]
    fn workers_are_derived_and_a_given_count_must_agree() {
        let env = SlurmEnv::from_vars(&vars(0, 5, "n1")).unwrap();
        assert_eq!(env.layout(2, Some(2)).unwrap().workers, 2);
        assert_eq!(
            env.layout(2, Some(3)),
            Err(SlurmError::WorkersMismatch {
                given: 3,
                derived: 2,
                ntasks: 5,
                servers: 2
            })
        );
        assert_eq!(
            env.layout(4, None),
            Err(SlurmError::TooFewTasks {
                ntasks: 5,
                servers: 4
            })
        );
        assert_eq!(env.layout(0, None), Err(SlurmError::NoServers));
        let e = env.layout(u32::MAX, None).unwrap_err().to_string();
        assert!(e.ends_with("run at least 4294967297 tasks"), "{e}");
        let env = SlurmEnv::from_vars(&vars(0, u32::MAX, "n1")).unwrap();
        assert!(matches!(
            env.layout(2, None),
            Err(SlurmError::TooManyWorkers { .. })
        ));
    }

    #[test]
    fn missing_and_bad_variables_are_named() {
        for var in [PROCID, NTASKS, LOCALID, JOB_ID, JOB_NODELIST] {
            let mut v = vars(1, 4, "n1");
            v.remove(var);
            let e = SlurmEnv::from_vars(&v).unwrap_err();
            assert_eq!(e, SlurmError::Missing { var });
            assert!(e.to_string().starts_with(var), "{e}");
        }
        let mut v = vars(1, 4, "n1");
        v.insert(PROCID.into(), "one".into());
        let e = SlurmEnv::from_vars(&v).unwrap_err().to_string();
        assert!(
            e.starts_with("SLURM_PROCID=\"one\": not a non-negative integer"),
            "{e}"
        );
        v.insert(PROCID.into(), " ".into());
        assert!(matches!(
            SlurmEnv::from_vars(&v),
            Err(SlurmError::Invalid { var: PROCID, .. })
        ));
        let mut v = vars(4, 4, "n1");
        assert_eq!(
            SlurmEnv::from_vars(&v),
            Err(SlurmError::ProcidOutOfRange {
                procid: 4,
                ntasks: 4
            })
        );
        v.insert(NTASKS.into(), "0".into());
        assert!(SlurmEnv::from_vars(&v).is_err());
        let e = SlurmEnv::from_vars(&vars(0, 4, "n[2-1]")).unwrap_err();
        assert!(
            e.to_string().starts_with("SLURM_JOB_NODELIST: bad range"),
            "{e}"
        );
        let mut v = vars(0, 4, "n1");
        v.insert(JOB_ID.into(), "../etc".into());
        assert!(matches!(
            SlurmEnv::from_vars(&v),
            Err(SlurmError::Invalid { var: JOB_ID, .. })
        ));
    }

    #[test]
    fn the_step_node_list_wins_and_names_the_directory() {
        let mut v = vars(0, 4, "n[1-4]");
        v.insert(STEP_NODELIST.into(), "n[3-4]".into());
        v.insert(STEP_ID.into(), "0".into());
        v.insert(RESTART_COUNT.into(), "2".into());
        let env = SlurmEnv::from_vars(&v).unwrap();
        assert_eq!(env.nodes, ["n3", "n4"]);
        assert_eq!(env.nodelist_var, STEP_NODELIST);
        assert_eq!(env.job_dir_name(), "ps-job4242-step0-restart2");
        let env = SlurmEnv::from_vars(&vars(0, 4, "n1")).unwrap();
        assert_eq!(env.job_dir_name(), "ps-job4242");
    }

    #[test]
    fn the_coordinator_must_run_on_the_first_host() {
        let mut v = vars(0, 4, "n[1-2]");
        v.insert(NODENAME.into(), "n2".into());
        let e = SlurmEnv::from_vars(&v)
            .unwrap()
            .layout(1, None)
            .unwrap_err();
        assert!(matches!(e, SlurmError::CoordinatorNotFirst { .. }), "{e}");
        v.insert(NODENAME.into(), "n1".into());
        assert!(SlurmEnv::from_vars(&v).unwrap().layout(1, None).is_ok());
        // Other tasks may run anywhere.
        let mut v = vars(3, 4, "n[1-2]");
        v.insert(NODENAME.into(), "n2".into());
        assert!(SlurmEnv::from_vars(&v).unwrap().layout(1, None).is_ok());
    }
}
