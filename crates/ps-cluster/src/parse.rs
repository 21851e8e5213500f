//! The command line with the chosen app's flags: `--app NAME` is found first, then the `local`,
//! `coordinator` and `slurm` commands are built with that app's own flags (each app declares them with
//! `clap`), so `--help` lists them and a flag of another app is refused by name.

use crate::cli::Cli;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches};
use ps_apps::app::DynApp;

/// The commands that plan a job and so take an app's flags.
const JOB_COMMANDS: [&str; 3] = ["local", "coordinator", "slurm"];

/// What parsing gave: the fixed flags, and the job command's matches (where the app reads
/// its flags from).
pub struct Parsed {
    pub cli: Cli,
    pub matches: clap::ArgMatches,
}

/// Why there is nothing to run: a clap error or help text to print, or a flag of another app.
pub enum NotRun {
    Clap(clap::Error),
    ForeignFlag(String),
}

/// The app `args` name with `--app` (the first app registered when none is named).
pub fn app_named<'a>(args: &[String], apps: &'a [Box<dyn DynApp>]) -> Option<&'a dyn DynApp> {
    let mut name = None;
    for (i, a) in args.iter().enumerate() {
        if a == "--app" {
            name = args.get(i + 1).map(String::as_str);
        } else if let Some(v) = a.strip_prefix("--app=") {
            name = Some(v);
        }
    }
    match name {
        Some(n) => apps.iter().find(|a| a.name() == n).map(|a| a.as_ref()),
        None => apps.first().map(|a| a.as_ref()),
    }
}

/// The `clap` command with `app`'s flags added to the job commands.
pub fn command(apps: &[Box<dyn DynApp>], app: Option<&dyn DynApp>) -> clap::Command {
    let names: Vec<&'static str> = apps.iter().map(|a| a.name()).collect();
    let list: Vec<String> = apps
        .iter()
        .map(|a| format!("{} ({})", a.name(), a.about()))
        .collect();
    let default = names.first().copied().unwrap_or("mf");
    let mut cmd = Cli::command();
    for sub in JOB_COMMANDS {
        cmd = cmd.mut_subcommand(sub, |c| {
            let c = c.mut_arg("app", |a| {
                a.value_parser(clap::builder::PossibleValuesParser::new(names.clone()))
                    .default_value(default)
                    .help(format!(
                        "Application: {}. `--app NAME --help` lists its flags",
                        list.join(", ")
                    ))
            });
            // An app's Args may carry a doc comment; the command keeps its own description.
            let (about, long_about) = (c.get_about().cloned(), c.get_long_about().cloned());
            let Some(app) = app else { return c };
            let mut c = app.add_args(c.next_help_heading(format!("--app {}", app.name())));
            if let Some(a) = about {
                c = c.about(a);
            }
            if let Some(a) = long_about {
                c = c.long_about(a);
            }
            c
        });
    }
    // Under Slurm the workers are the tasks left after the coordinator and the shards.
    cmd.mut_subcommand("slurm", |c| {
        c.mut_arg("workers", |a| {
            a.hide_default_value(true).help(
                "Number of workers [default: SLURM_NTASKS - 1 - --servers; if given, it must equal that]",
            )
        })
    })
}

/// Parses `args` (program name first) for `apps`.
pub fn parse(args: &[String], apps: &[Box<dyn DynApp>]) -> Result<Parsed, NotRun> {
    let app = app_named(args, apps);
    let matches = match command(apps, app).try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::UnknownArgument => {
            return Err(foreign_flag(&e, apps, app).map_or(NotRun::Clap(e), NotRun::ForeignFlag))
        }
        Err(e) => return Err(NotRun::Clap(e)),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(NotRun::Clap)?;
    let sub = matches
        .subcommand()
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    Ok(Parsed { cli, matches: sub })
}

/// "--rank does not apply to --app lda (it is for mf)" when an unknown flag is another app's.
fn foreign_flag(
    e: &clap::Error,
    apps: &[Box<dyn DynApp>],
    app: Option<&dyn DynApp>,
) -> Option<String> {
    let ContextValue::String(arg) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split('=').next()?;
    let app = app?;
    let owners: Vec<&str> = apps
        .iter()
        .filter(|a| a.name() != app.name())
        .filter(|a| {
            a.add_args(clap::Command::new("probe"))
                .get_arguments()
                .any(|x| x.get_long() == Some(long))
        })
        .map(|a| a.name())
        .collect();
    (!owners.is_empty()).then(|| {
        format!(
            "--{long} does not apply to --app {} (it is for {})",
            app.name(),
            owners.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn each_app_takes_its_own_flags_and_refuses_the_others() {
        let apps = ps_apps::app::builtin();
        let ok = parse(
            &args("ps-cluster local --app lda --topics 5 --alpha 0.2"),
            &apps,
        );
        assert!(ok.is_ok());
        let ok = parse(&args("ps-cluster local --rank 4 --reg 0.01"), &apps);
        assert!(ok.is_ok(), "mf is the default app");
        match parse(&args("ps-cluster local --app=lda --rank 4"), &apps) {
            Err(NotRun::ForeignFlag(m)) => {
                assert_eq!(m, "--rank does not apply to --app lda (it is for mf)")
            }
            _ => panic!("--rank was taken for lda"),
        }
        match parse(&args("ps-cluster local --app lda --lr=0.1"), &apps) {
            Err(NotRun::ForeignFlag(m)) => assert!(m.contains("it is for mf, mlp, lr"), "{m}"),
            _ => panic!("--lr was taken for lda"),
        }
        assert!(matches!(
            parse(&args("ps-cluster local --app lda --nonsense 1"), &apps),
            Err(NotRun::Clap(_))
        ));
        assert!(matches!(
            parse(&args("ps-cluster local --app svm"), &apps),
            Err(NotRun::Clap(_))
        ));
    }

    #[test]
    fn workers_and_shards_take_no_app_flags() {
        let apps = ps_apps::app::builtin();
        let p = parse(
            &args("ps-cluster worker --coordinator 127.0.0.1:1 --ca a --cert b --key c"),
            &apps,
        );
        assert!(p.is_ok());
    }
}
