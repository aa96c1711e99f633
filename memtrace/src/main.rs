use std::process::ExitCode;

use memtrace::{
    agent,
    cli::{self, AgentArgs, Invocation, Usage},
    demo, exit,
    session::{self, CgroupTarget, Target},
};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    if let Some(agent) = cli::parse_agent(&args) {
        return match agent {
            Ok(agent) => run_agent(&agent),
            Err(usage) => usage_exit(usage),
        };
    }
    let cli = cli::parse(args).and_then(|cli| Ok((cli.invocation()?, cli)));
    let (target, options) = match cli {
        Ok((Invocation::DemoWorkload(hold), _)) => return demo::workload(hold).into(),
        Ok((
            Invocation::Report {
                file,
                contents: true,
                ..
            },
            _,
        )) => {
            return match session::capture_contents(&file) {
                Ok(text) => {
                    print!("{text}");
                    exit::ExitCode::Success.into()
                }
                Err(err) => {
                    eprintln!("memtrace: {err}");
                    exit::ExitCode::from(&err).into()
                }
            }
        }
        Ok((
            Invocation::Report {
                file,
                contents: false,
                window,
                diff_base,
            },
            cli,
        )) => {
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            return match runtime.block_on(session::report_capture(
                &file,
                &cli.options,
                window,
                diff_base.as_deref(),
            )) {
                Ok(_) => exit::ExitCode::Success.into(),
                Err(err) => {
                    eprintln!("memtrace: {err}");
                    exit::ExitCode::from(&err).into()
                }
            };
        }
        Ok((Invocation::Demo, cli)) => (Target::Command(demo::command()), cli.options),
        Ok((Invocation::Pid(pid), cli)) => (Target::Pid(pid), cli.options),
        Ok((Invocation::Command(argv), cli)) => (Target::Command(argv), cli.options),
        Ok((Invocation::Cgroup(path), cli)) => {
            (Target::Cgroup(CgroupTarget::Path(path)), cli.options)
        }
        Ok((Invocation::Container(name), cli)) => {
            (Target::Cgroup(CgroupTarget::Container(name)), cli.options)
        }
        Err(usage) => return usage_exit(usage),
    };
    raise_open_files_limit();
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(session::run(target, &options)) {
        Ok(_) => exit::ExitCode::Success.into(),
        Err(err) => {
            // Every message already names its cause, so only the top one.
            eprintln!("memtrace: {err}");
            exit::ExitCode::from(&err).into()
        }
    }
}

/// `memtrace agent`: runs until SIGTERM or SIGINT.
fn run_agent(args: &AgentArgs) -> ExitCode {
    let config = match agent::settings(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("memtrace agent: {err}");
            return exit::ExitCode::BadInput.into();
        }
    };
    raise_open_files_limit();
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(agent::run(config)) {
        Ok(()) => exit::ExitCode::Success.into(),
        Err(err) => {
            eprintln!("memtrace agent: {err}");
            exit::ExitCode::from(&err).into()
        }
    }
}

fn usage_exit(usage: Usage) -> ExitCode {
    match usage {
        Usage::Show(text) => {
            print!("{text}");
            exit::ExitCode::Success.into()
        }
        Usage::Bad(line) => {
            eprintln!("memtrace: {line}");
            exit::ExitCode::Usage.into()
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("memtrace: cannot start the async runtime: {err}");
            exit::ExitCode::Failure.into()
        })
}

/// memtrace holds each traced program's code files open (so they can be
/// read after the program is gone): take the open-file limit up to what
/// the hard limit allows. If this fails, files past the limit are read by
/// path, as before.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
