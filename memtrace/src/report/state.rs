//! Whether a traced process still runs, and how it ended.

/// Where a traced process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    Running,
    Exited,
    OomKilled,
}

impl TargetState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
            Self::OomKilled => "oom_killed",
        }
    }
}
