use std::process::ExitCode;

use memtrace::{
    cli::{self, Invocation, Usage},
    demo, exit,
    session::{self, CgroupTarget, Target},
};

fn main() -> ExitCode {
    let cli = cli::parse(std::env::args_os()).and_then(|cli| Ok((cli.invocation()?, cli)));
    let (target, options) = match cli {
        Ok((Invocation::DemoWorkload(hold), _)) => return demo::workload(hold).into(),
        Ok((Invocation::Report(path), _)) => {
            return match session::report_capture(&path) {
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
        Ok((Invocation::Demo, cli)) => (Target::Command(demo::command()), cli.options),
        Ok((Invocation::Pid(pid), cli)) => (Target::Pid(pid), cli.options),
        Ok((Invocation::Command(argv), cli)) => (Target::Command(argv), cli.options),
        Ok((Invocation::Cgroup(path), cli)) => {
            (Target::Cgroup(CgroupTarget::Path(path)), cli.options)
        }
        Ok((Invocation::Container(name), cli)) => {
            (Target::Cgroup(CgroupTarget::Container(name)), cli.options)
        }
        Err(Usage::Show(text)) => {
            print!("{text}");
            return exit::ExitCode::Success.into();
        }
        Err(Usage::Bad(line)) => {
            eprintln!("memtrace: {line}");
            return exit::ExitCode::Usage.into();
        }
    };
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("memtrace: cannot start the async runtime: {err}");
            return exit::ExitCode::Failure.into();
        }
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
