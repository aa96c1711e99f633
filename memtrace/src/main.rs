use std::process::ExitCode;

use clap::Parser;
use memtrace::{
    cli::{Cli, Command},
    demo, exit,
    session::{self, Target},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (target, options) = match cli.command {
        Some(Command::DemoWorkload { hold }) => return demo::workload(hold).into(),
        Some(Command::Demo { options }) => (Target::Command(demo::command()), *options),
        None => match (cli.pid, cli.cmd.is_empty()) {
            (Some(pid), _) => (Target::Pid(pid.get()), cli.options),
            (None, false) => (Target::Command(cli.cmd), cli.options),
            (None, true) => {
                eprintln!(
                    "memtrace: say what to trace: -p PID, -- COMMAND [ARGS...], or `memtrace demo` \
                     (see --help)"
                );
                return exit::ExitCode::Usage.into();
            }
        },
    };
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
